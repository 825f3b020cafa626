// Convolutions on channels-last [H][W][C] maps. Depthwise KxK has its own unit (LD channel lanes of K*K
// MACs, weights of LD channels and a (K + 1)-row line buffer on chip; float or int8); pointwise and dense KxK
// convolutions run on the shared linear unit, the latter after im2col (a data mover between arena tensors).
#ifndef EDGEVIT_CONV_H
#define EDGEVIT_CONV_H

#include "activation.h"
#include "descriptor.h"
#include "packed.h"
#include "requant.h"
#include "tripcount_product.h"

namespace edgevit {

// Whether the depthwise unit can overlap a row's reads with an output row (dw_overlapped_rows): every pixel's
// channel group is whole beats (LD and C multiples of WPB, x and y on a beat), so a pixel moves LD / WPB beats
// each way and no beat is read to be merged. layer_table's 32-word alignment of tensors gives the last two.
template <class CFG>
inline bool depthwise_overlaps(const layer_desc& d) {
    return CFG::LD % CFG::WPB == 0 && d.d2 % CFG::WPB == 0 && d.x % CFG::WPB == 0 && d.y % CFG::WPB == 0;
}

// Output pixel (oy, ox) of a group of LD channels: LD lanes x KMAXDW x KMAXDW taps unrolled (taps beyond the
// layer's K masked) over the line buffer (input row iy in slot iy % (K + 1)) and the lanes' weights, then the float
// epilogue (activation.h) or, with INT8, requantisation with the channel's record.
template <class CFG, bool INT8>
void dw_pixel(const word_t lines[CFG::KMAXDW + 1][CFG::WMAX][CFG::LD], const word_t wbuf[CFG::LD][CFG::KMAXDW * CFG::KMAXDW],
              const i64 bias[CFG::LD], const requant_param rq[CFG::LD], const layer_desc& d, int oy, int ox,
              word_t res[CFG::LD]) {
#pragma HLS INLINE
    const int H = d.d0, W = d.d1, K = d.d3, S = d.d4, PAD = d.d5, FA = d.fx + d.fw;
    for (int l = 0; l < CFG::LD; ++l) {
#pragma HLS UNROLL
        i64 acc = bias[l];
        for (int ky = 0; ky < CFG::KMAXDW; ++ky) {
#pragma HLS UNROLL
            for (int kx = 0; kx < CFG::KMAXDW; ++kx) {
#pragma HLS UNROLL
                const int ry = oy * S + ky - PAD, rx = ox * S + kx - PAD;
                if (ky < K && kx < K && ry >= 0 && ry < H && rx >= 0 && rx < W)
                    acc += (i64)lines[ry % (K + 1)][rx][l] * (i64)wbuf[l][ky * K + kx];
            }
        }
        res[l] = word_t(INT8 ? requantize_int8(acc, rq[l], d.act == ACT_RELU) : epilogue(acc, FA, d.act, d.fo, d.wo));
    }
}

// Whether output row oy's input rows are all among rows [0, iy).
inline bool dw_row_ready(const layer_desc& d, int oy, int iy) {
    const int last = oy * d.d4 - d.d5 + d.d3 - 1;
    return (last < d.d0 - 1 ? last : d.d0 - 1) < iy;
}

// The group's rows when depthwise_overlaps: passes that each read input row iy (while iy < H) and compute output
// row oy when its input rows have all arrived, max(W, WO) pixels at LD / WPB beats each way a pixel (reads and writes
// are separate AXI channels). The passes are one pipelined loop (one m_axi request stream a group, not one a row).
// An output row is computed in the first pass after its last input row (one a pass keeps pace with stride >= 1),
// so its rows are the K before the one being read: K + 1 slots of line buffer.
template <class CFG, bool INT8>
void dw_overlapped_rows(word_port<CFG>& arena, const layer_desc& d, int c0, int n,
                        word_t lines[CFG::KMAXDW + 1][CFG::WMAX][CFG::LD],
                        const word_t wbuf[CFG::LD][CFG::KMAXDW * CFG::KMAXDW], const i64 bias[CFG::LD],
                        const requant_param rq[CFG::LD]) {
    typedef typename CFG::beat_t beat_t;
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, S = d.d4, PAD = d.d5;
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1, nb = n / CFG::WPB;
    int iy = 0, oy = 0, x = 0, i = 0;
    bool out = false;   // the first pass only reads
    for (; iy < H || oy < HO; ++i) {
        EDGEVIT_TRIPCOUNT(CFG::dw_overlapped)
#pragma HLS PIPELINE II=1
        const bool in = iy < H;
        if (in && x < W) {
            const int b0 = (d.x + (iy * W + x) * C + c0) / CFG::WPB;
            for (int j = 0; j < CFG::LD / CFG::WPB; ++j) {
#pragma HLS UNROLL
                if (j < nb) {
                    const beat_t v = arena.beat(b0 + j);
                    for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                        lines[iy % (K + 1)][x][j * CFG::WPB + l] = lane_of(v, l);
                    }
                }
            }
        }
        if (out && x < WO) {
            word_t res[CFG::LD];
            dw_pixel<CFG, INT8>(lines, wbuf, bias, rq, d, oy, x, res);
            const int b0 = (d.y + (oy * WO + x) * C + c0) / CFG::WPB;
            for (int j = 0; j < CFG::LD / CFG::WPB; ++j) {
#pragma HLS UNROLL
                if (j < nb) {
                    beat_t v = 0;
                    for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                        set_lane(v, l, res[j * CFG::WPB + l]);
                    }
                    arena.put_whole_beat(b0 + j, v);
                }
            }
        }
        if (++x == (out && WO > (in ? W : 0) ? WO : (in ? W : 0))) {   // the pass ends: the next one's rows
            x = 0;
            iy += in;
            oy += out;
            out = oy < HO && dw_row_ready(d, oy, iy);
        }
    }
#ifndef __SYNTHESIS__
    unit_loop_note(i);
#endif
}

// The group's rows otherwise: per input row one pipelined read of its pixels, then every output row whose input
// rows have all arrived. A pixel's n words move as the (LD + WPB - 2) / WPB + 1 beats at most that hold them
// (read_lanes / write_lanes, packed.h; a beat only partly written is merged), which bounds the II of both loops.
template <class CFG, bool INT8>
void dw_sequential_rows(word_port<CFG>& arena, const layer_desc& d, int c0, int n,
                        word_t lines[CFG::KMAXDW + 1][CFG::WMAX][CFG::LD],
                        const word_t wbuf[CFG::LD][CFG::KMAXDW * CFG::KMAXDW], const i64 bias[CFG::LD],
                        const requant_param rq[CFG::LD]) {
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, S = d.d4, PAD = d.d5;
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1;
    int oy = 0;
    for (int iy = 0; iy < H; ++iy) {
        EDGEVIT_TRIPCOUNT(CFG::dw_rows)
#ifndef __SYNTHESIS__
        unit_loop_note(W);
#endif
        for (int x = 0; x < W; ++x) {
            EDGEVIT_TRIPCOUNT(CFG::dw_cols)
#pragma HLS PIPELINE II=1
            word_t px[CFG::LD];
            read_lanes<CFG>(arena, d.x + (iy * W + x) * C + c0, n, px);
            for (int l = 0; l < CFG::LD; ++l) {
#pragma HLS UNROLL
                lines[iy % (K + 1)][x][l] = px[l];
            }
        }
        for (; oy < HO && dw_row_ready(d, oy, iy + 1); ++oy) {
            EDGEVIT_TRIPCOUNT(CFG::dw_rows_ready)
#ifndef __SYNTHESIS__
            unit_loop_note(WO);
#endif
            for (int ox = 0; ox < WO; ++ox) {
                EDGEVIT_TRIPCOUNT(CFG::dw_out_cols)
#pragma HLS PIPELINE II=1
                word_t res[CFG::LD];
                dw_pixel<CFG, INT8>(lines, wbuf, bias, rq, d, oy, ox, res);
                write_lanes<CFG>(arena, d.y + (oy * WO + ox) * C + c0, n, res);
            }
        }
    }
}

// x [H][W][C] at d.x (d0, d1, d2), kernel K = d3 <= KMAXDW, stride d4, padding d5, W <= WMAX; w [C][K][K]
// at d.w, 64-bit biases [C] at d.b; y [HO][WO][C] with HO = (H + 2 PAD - K) / S + 1. INT8 (ops.py kind qdwconv):
// operands are int8 minus their zero points, int32 biases, and each output is requantised with its channel's record
// (d.w2, requant.h) instead of the epilogue. For each group of LD channels the weights and biases load a beat a
// cycle, then the input is read once, row by row, into the line buffer; an output row is computed as soon as its
// last input row has arrived, in the same pipelined loop as the next row's reads when depthwise_overlaps. The pixel
// loops are pipelined at II=1 (the target: one output pixel of LD channels per cycle): the LD lanes and the
// KMAXDW x KMAXDW window are unrolled, so the line buffer is split into its rows, KMAXDW column banks (a window's
// columns are consecutive) and its lanes, and the weights by lane; a pixel's port beats bound the II.
template <class CFG, bool INT8 = false>
void depthwise_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<tripcount_const<CFG::LD>, typename CFG::dw_window> group_weights;
    static word_t wbuf[CFG::LD][CFG::KMAXDW * CFG::KMAXDW], lines[CFG::KMAXDW + 1][CFG::WMAX][CFG::LD];
#pragma HLS ARRAY_PARTITION variable=wbuf complete dim=0
#pragma HLS ARRAY_PARTITION variable=lines complete dim=1
#pragma HLS ARRAY_PARTITION variable=lines cyclic factor=CFG::KMAXDW dim=2
#pragma HLS ARRAY_PARTITION variable=lines complete dim=3
    i64 bias[CFG::LD];
    requant_param rq[CFG::LD];
#pragma HLS ARRAY_PARTITION variable=bias complete
#pragma HLS ARRAY_PARTITION variable=rq complete
#ifndef __SYNTHESIS__
    unit_loop_begin();
#endif
    const int C = d.d2, KK = d.d3 * d.d3;
    const bool overlap = depthwise_overlaps<CFG>(d);
    for (int c0 = 0; c0 < C; c0 += CFG::LD) {
        EDGEVIT_TRIPCOUNT(CFG::dw_channel_groups)
        const int n = C - c0 < CFG::LD ? C - c0 : CFG::LD;
        load_rows<CFG, word_source<CFG>, group_weights>(params, d.w + c0 * KK, n, KK, wbuf);
        load_biases<CFG, CFG::LD>(params, d.b >= 0 ? d.b + 4 * c0 : -1, n, bias);
        if (INT8) {
#ifndef __SYNTHESIS__
            unit_loop_note(CFG::LD);
#endif
            for (int l = 0; l < CFG::LD; ++l) {
#pragma HLS PIPELINE II=4
                if (l < n) rq[l] = read_requant(params, d.w2 + REQUANT_RECORD_WORDS * (c0 + l));
            }
        }
        if (overlap) dw_overlapped_rows<CFG, INT8>(arena, d, c0, n, lines, wbuf, bias, rq);
        else dw_sequential_rows<CFG, INT8>(arena, d, c0, n, lines, wbuf, bias, rq);
    }
#ifndef __SYNTHESIS__
    unit_loop_end();
#endif
}

// The next output position of im2col: channel c in steps of `step` words, then tap column kx, tap row ky, output
// column ox, output row oy.
inline void im2col_next(int step, int C, int K, int WO, int& c, int& kx, int& ky, int& ox, int& oy) {
    c += step;
    if (c == C) {
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

// Floor division by WPB of a word offset that may be negative (a tap row starting in the padding left of the map).
template <class CFG>
inline int beat_of(int off) {
    return off >= 0 ? off / CFG::WPB : -((CFG::WPB - 1 - off) / CFG::WPB);
}

// [H][W][C] -> [HO * WO][K * K * C], patch order (ky, kx, c), zeros outside the map; dims as above. One
// pipelined loop over the whole output (one m_axi request stream for the layer, not one per pixel and tap), in
// order, a beat read a cycle. When C is whole beats (and x, y on a beat, as layer_table lays tensors out) the output
// beat is an input beat (a pixel's channels at one tap) or zeros. Otherwise (the 3-channel stem) a tap row, K pixels
// of one input row and so K C consecutive words, takes the RB beats such a run can span: iteration r reads the run's
// beat r (unless it holds none of its words in the map) and puts its lanes at their places in the output, which
// a two-beat window collects (a chunk of WPB words spans at most two output beats); a beat leaves whole when the
// chunks have moved past it.
template <class CFG>
void im2col(word_port<CFG>& arena, const layer_desc& d) {
    typedef typename CFG::beat_t beat_t;
    typedef tripcount_product<typename CFG::im2col_out_rows, typename CFG::im2col_out_cols> pixels;
    typedef tripcount_product<tripcount_product<pixels, typename CFG::im2col_k>, typename CFG::im2col_run_beats>
        run_beats;
    typedef tripcount_product<tripcount_product<pixels, tripcount_product<typename CFG::im2col_k,
                                                                          typename CFG::im2col_k> >,
                              typename CFG::im2col_channels> out_words;
    typedef tripcount_beats<out_words, CFG::WPB> out_beats;
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, S = d.d4, PAD = d.d5;
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1, words = HO * WO * K * K * C;
    const int KC = K * C, RB = row_pass_beats<CFG>(false, KC);
    const bool whole = C % CFG::WPB == 0 && d.x % CFG::WPB == 0 && d.y % CFG::WPB == 0;
    int oy = 0, ox = 0, ky = 0, kx = 0, c = 0;
#ifndef __SYNTHESIS__
    unit_loop_single(whole ? words / CFG::WPB : HO * WO * K * RB);
#endif
    if (whole) {
        for (int i = 0; i < words / CFG::WPB; ++i) {
            EDGEVIT_TRIPCOUNT(out_beats)
#pragma HLS PIPELINE II=1
            const int iy = oy * S + ky - PAD, ix = ox * S + kx - PAD;
            const bool in = iy >= 0 && iy < H && ix >= 0 && ix < W;
            arena.put_whole_beat(d.y / CFG::WPB + i,
                                 in ? arena.beat((d.x + (iy * W + ix) * C + c) / CFG::WPB) : beat_t(0));
            im2col_next(CFG::WPB, C, K, WO, c, kx, ky, ox, oy);
        }
        return;
    }
    const int end = d.y + words;
    int cb = d.y / CFG::WPB, out = d.y, r = 0;   // the window's first beat; the output word of the run's first word
    beat_t v0 = arena.beat(cb), v1 = 0;          // the window (lanes before y keep their words)
    for (int i = 0; i < HO * WO * K * RB; ++i) {
        EDGEVIT_TRIPCOUNT(run_beats)
#pragma HLS PIPELINE II=1
        const int iy = oy * S + ky - PAD, ix0 = ox * S - PAD;
        const int start = d.x + (iy * W + ix0) * C, fb = beat_of<CFG>(start), sh = start - fb * CFG::WPB;
        const int lo = ix0 < 0 ? -ix0 * C : 0, hi = (ix0 + K > W ? W - ix0 : K) * C;   // the words in the map
        const int b = fb + r;
        const bool read = iy >= 0 && iy < H && b * CFG::WPB < start + hi && (b + 1) * CFG::WPB > start + lo;
        const beat_t v = read ? arena.beat(b) : beat_t(0);
        const int first = out + (r * CFG::WPB - sh > 0 ? r * CFG::WPB - sh : 0);
        if (first / CFG::WPB > cb && r * CFG::WPB - sh < KC) {   // the chunks have left beat cb: it is complete
            arena.put_whole_beat(cb, v0);
            v0 = v1;
            v1 = 0;
            ++cb;
        }
        for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
            const int q = r * CFG::WPB + l - sh, p = out + q;   // word q of the run, output word p
            if (q >= 0 && q < KC) {
                const word_t w = read && q >= lo && q < hi ? lane_of(v, l) : word_t(0);
                if (p / CFG::WPB == cb)
                    set_lane(v0, p % CFG::WPB, w);
                else
                    set_lane(v1, p % CFG::WPB, w);
            }
        }
        if (++r == RB) {
            r = 0;
            out += KC;
            if (++ky == K) {
                ky = 0;
                if (++ox == WO) {
                    ox = 0;
                    ++oy;
                }
            }
        }
    }
    // the window's beats that hold output words; the last ones may end inside a beat (merged)
    ap_uint<CFG::WPB> m0 = 0, m1 = 0;
    for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
        m0[l] = cb * CFG::WPB + l < end;
        m1[l] = (cb + 1) * CFG::WPB + l < end;
    }
    arena.put_beat(cb, v0, m0);
    if (m1 != 0) arena.put_beat(cb + 1, v1, m1);
}

}  // namespace edgevit

#endif
