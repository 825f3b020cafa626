// Convolutions on channels-last [H][W][C] maps. Depthwise KxK has its own unit (LD channel lanes of K*K
// MACs, weights of LD channels and a K-row line buffer on chip); pointwise and dense KxK convolutions run on
// the shared linear unit, the latter after im2col (a data mover between arena tensors).
#ifndef EDGEVIT_CONV_H
#define EDGEVIT_CONV_H

#include "activation.h"
#include "descriptor.h"
#include "packed.h"
#include "tripcount_product.h"

namespace edgevit {

// x [H][W][C] at d.x (d0, d1, d2), kernel K = d3 <= KMAXDW, stride d4, padding d5, W <= WMAX; w [C][K][K]
// at d.w, bias [C]; y [HO][WO][C] with HO = (H + 2 PAD - K) / S + 1. For each group of LD channels the input
// is read once, row by row, into a line buffer of K rows; an output row is computed as soon as its last
// input row has arrived. The ox loop is pipelined at II=1 (the target: one output pixel per cycle): the LD
// lanes and the KMAXDW x KMAXDW window are unrolled (taps beyond the layer's K masked), so the line buffer is
// split into its rows, KMAXDW column banks (a window's columns are consecutive) and its lanes, and the weights
// by lane. A pixel's LD input words and its LD results move as the port beats that hold them (read_lanes /
// write_lanes, packed.h): (LD + WPB - 2) / WPB + 1 beats at most, which bounds the II of both loops.
template <class CFG>
void depthwise_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static word_t wbuf[CFG::LD][CFG::KMAXDW * CFG::KMAXDW], lines[CFG::KMAXDW][CFG::WMAX][CFG::LD];
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=0
#pragma HLS ARRAY_PARTITION variable=lines complete dim=1
#pragma HLS ARRAY_PARTITION variable=lines cyclic factor=CFG::KMAXDW dim=2
#pragma HLS ARRAY_PARTITION variable=lines complete dim=3
    i64 bias[CFG::LD];
#pragma HLS ARRAY_PARTITION variable=bias complete
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, S = d.d4, PAD = d.d5, FA = d.fx + d.fw;
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1;
    for (int c0 = 0; c0 < C; c0 += CFG::LD) {
        EDGEVIT_TRIPCOUNT(CFG::dw_channel_groups)
        for (int l = 0; l < CFG::LD; ++l) {
            if (c0 + l < C) {
                for (int k = 0; k < K * K; ++k) {
                    EDGEVIT_TRIPCOUNT(CFG::dw_window)
#pragma HLS PIPELINE II=1
                    wbuf[l][k] = params.get(d.w + (c0 + l) * K * K + k);
                }
                bias[l] = d.b >= 0 ? params.get_i64(d.b + 4 * (c0 + l)) : 0;
            }
        }
        int oy = 0;
        for (int iy = 0; iy < H; ++iy) {
            EDGEVIT_TRIPCOUNT(CFG::dw_rows)
            // The row's pixels in one pipelined loop (one m_axi request stream per row), LD words a pixel.
            const int n = C - c0 < CFG::LD ? C - c0 : CFG::LD;
            for (int x = 0; x < W; ++x) {
                EDGEVIT_TRIPCOUNT(CFG::dw_cols)
#pragma HLS PIPELINE II=1
                word_t px[CFG::LD];
                read_lanes<CFG>(arena, d.x + (iy * W + x) * C + c0, n, px);
                for (int l = 0; l < CFG::LD; ++l) {
#pragma HLS UNROLL
                    lines[iy % K][x][l] = px[l];
                }
            }
            for (; oy < HO; ++oy) {  // every output row whose input rows have all arrived
                EDGEVIT_TRIPCOUNT(CFG::dw_rows_ready)
                const int last = oy * S - PAD + K - 1;
                if ((last < H - 1 ? last : H - 1) > iy) break;
                for (int ox = 0; ox < WO; ++ox) {
                    EDGEVIT_TRIPCOUNT(CFG::dw_out_cols)
#pragma HLS PIPELINE II=1
                    word_t res[CFG::LD];
                    for (int l = 0; l < CFG::LD; ++l) {
#pragma HLS UNROLL
                        i64 acc = bias[l];
                        for (int ky = 0; ky < CFG::KMAXDW; ++ky) {
#pragma HLS UNROLL
                            for (int kx = 0; kx < CFG::KMAXDW; ++kx) {
#pragma HLS UNROLL
                                const int ry = oy * S + ky - PAD, rx = ox * S + kx - PAD;
                                if (ky < K && kx < K && ry >= 0 && ry < H && rx >= 0 && rx < W)
                                    acc += (i64)lines[ry % K][rx][l] * (i64)wbuf[l][ky * K + kx];
                            }
                        }
                        res[l] = epilogue(acc, FA, d.act, d.fo, d.wo);
                    }
                    write_lanes<CFG>(arena, d.y + (oy * WO + ox) * C + c0, n, res);
                }
            }
        }
    }
}

// [H][W][C] -> [HO * WO][K * K * C], patch order (ky, kx, c), zeros outside the map; dims as above. One
// pipelined loop over all output words (one m_axi request stream for the layer, not one per pixel and tap):
// the output is written in order, a beat per WPB words; each word reads its input word (consecutive within a
// tap row of K * C words, so a beat serves up to WPB of them).
template <class CFG>
void im2col(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<tripcount_product<typename CFG::im2col_out_rows, typename CFG::im2col_out_cols>,
                              tripcount_product<tripcount_product<typename CFG::im2col_k, typename CFG::im2col_k>,
                                                typename CFG::im2col_channels> > out_words;
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, S = d.d4, PAD = d.d5;
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1;
    int oy = 0, ox = 0, ky = 0, kx = 0, c = 0;
    for (int i = 0; i < HO * WO * K * K * C; ++i) {
        EDGEVIT_TRIPCOUNT(out_words)
#pragma HLS PIPELINE II=1
        const int iy = oy * S + ky - PAD, ix = ox * S + kx - PAD;
        const bool in = iy >= 0 && iy < H && ix >= 0 && ix < W;
        arena.put(d.y + i, in ? arena.get(d.x + (iy * W + ix) * C + c) : word_t(0));
        if (++c == C) {
            c = 0;
            if (++kx == K) {
                kx = 0;
                if (++ky == K) {
                    ky = 0;
                    if (++ox == WO) {
                        ox = 0;
                        ++oy;
                    }
                }
            }
        }
    }
}

}  // namespace edgevit

#endif
