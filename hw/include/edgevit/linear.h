// The shared linear unit: every linear layer (Q/K/V, projection, MLP), pointwise conv and im2col'd KxK conv.
// M, K, N, formats and epilogue come from the descriptor at run time; only the lanes are compile-time:
// each cycle LI input lanes times LO output lanes (LI * LO MACs, the unrolled body of the pipelined k loop).
// Tiles on chip: TM tokens of input (TM x KMAX words, XBANKS = max(LI, WPB) banks) and LO weight rows (LO x KMAX
// words, XBANKS banks per pair of rows), so all LI * LO operands of a cycle come from distinct memories or the
// two halves of one word, and the WPB words of a port beat from distinct banks (tiles load and results leave a
// beat per cycle, packed.h). Rows 2j and 2j+1 share each bank as the halves of a 32-bit word (w[j][k][2],
// dim 3 reshaped): the MAC step reads both at one address, and a BRAM18 of 512 x 36 holds the pair of 16-bit
// banks (KMAX / XBANKS <= 512 words) that would otherwise take two BRAM18 of 1K x 18 a quarter or half full.
// A tile load writes one half (the BRAM's byte write enables). The descriptor picks the loop order
// (d3): token tiles outer (each weight tile re-read once per token tile) or weight tiles outer (each input tile
// re-read once per weight tile), whichever moves fewer words. Each tile load, the MAC steps of a tile and its
// write-back are one pipelined loop each, run one after the other (no ping-pong yet). The accumulator is exact
// (64 bits), so neither the tiling nor the order changes a result. Epilogue: bias, activation and
// requantisation (activation.h), optional residual.
#ifndef EDGEVIT_LINEAR_H
#define EDGEVIT_LINEAR_H

#include "activation.h"
#include "descriptor.h"
#include "packed.h"
#include "tripcount_product.h"

namespace edgevit {

#ifndef __SYNTHESIS__
// C-simulation only: parameter words (weights and biases) the unit has read from DDR, in total. The MoE unit
// takes differences of it to count each expert's reads.
inline long& linear_weight_words_read() { static long n = 0; return n; }
#endif

// Word k of row m of a tile: x [TM][KMAX] as written, the weight tile's rows in pairs (w [LO / 2][KMAX][2]).
template <int KMAX>
inline void tile_put(word_t (*dst)[KMAX], int m, int k, word_t v) {
    dst[m][k] = v;
}

template <int KMAX>
inline void tile_put(word_t (*dst)[KMAX][2], int m, int k, word_t v) {
    dst[m >> 1][k][m & 1] = v;
}

// Words [start, start + rows * K) of a buffer into rows [0, rows) of a tile: one pipelined pass over the beats
// that hold them (one m_axi request stream), WPB words a cycle. The lanes of a beat go to consecutive positions
// (k wraps to the next row at K), so the tile needs WPB banks on its k dimension (the callers partition it by
// max(LI, WPB)).
template <class CFG, class PORT, class WORDS, class TILE>
void load_rows(PORT& mem, int start, int rows, int K, TILE dst) {
    typedef tripcount_beats<WORDS, CFG::WPB> beats_trip;
    const int first = start / CFG::WPB, beats = (start + rows * K - 1) / CFG::WPB - first + 1;
    int m = 0, k = -(start % CFG::WPB);   // row and column of the beat's lane 0
    for (int i = 0; i < beats; ++i) {
        EDGEVIT_TRIPCOUNT(beats_trip)
#pragma HLS PIPELINE II=1
        const typename CFG::beat_t v = mem.beat(first + i);
        for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
            if (k >= 0 && m < rows) tile_put<CFG::KMAX>(dst, m, k, lane_of(v, l));
            if (++k == K) {
                k = 0;
                ++m;
            }
        }
    }
}

// Tokens [m0, m0 + tm) of x [M][K] into the input tile (their tm x K words are consecutive in DDR).
template <class CFG>
void linear_load_x(word_port<CFG>& arena, const layer_desc& d, int m0, int tm, word_t x[CFG::TM][CFG::KMAX]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens, typename CFG::linear_k> tile_words;
    load_rows<CFG, word_port<CFG>, tile_words>(arena, d.x + m0 * d.d1, tm, d.d1, x);
}

// Weight rows [n0, n0 + LO) of w [N][K] and their biases into the weight tile, each in one pipelined pass (the
// rows are consecutive in DDR, and so are their 64-bit biases, four little-endian words each). Lanes past N
// keep stale words: their sums are never written.
template <class CFG>
void linear_load_w(word_source<CFG>& params, const layer_desc& d, int n0, word_t w[(CFG::LO + 1) / 2][CFG::KMAX][2],
                   i64 bias[CFG::LO]) {
    typedef tripcount<CFG::linear_k::min, CFG::linear_k::max * CFG::LO, CFG::linear_k::avg * CFG::LO> tile_words;
    typedef tripcount_beats<tripcount<4, 4 * CFG::LO, 4 * CFG::LO>, CFG::WPB> bias_beats;
    const int rows = d.d2 - n0 < CFG::LO ? d.d2 - n0 : CFG::LO;
    load_rows<CFG, word_source<CFG>, tile_words>(params, d.w + n0 * d.d1, rows, d.d1, w);
    for (int l = 0; l < CFG::LO; ++l) {
#pragma HLS UNROLL
        bias[l] = 0;
    }
    if (d.b >= 0) {
        const int start = d.b + 4 * n0, first = start / CFG::WPB;
        const int beats = (start + 4 * rows - 1) / CFG::WPB - first + 1;
        int i = -(start % CFG::WPB);   // bias word of the beat's lane 0
        for (int b = 0; b < beats; ++b) {
            EDGEVIT_TRIPCOUNT(bias_beats)
#pragma HLS PIPELINE II=1
            const typename CFG::beat_t v = params.beat(first + b);
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                if (i + l >= 0 && i + l < 4 * rows)
                    bias[(i + l) >> 2] |= (i64)(unsigned short)lane_of(v, l).to_int() << (16 * ((i + l) & 3));
            }
            i += CFG::WPB;
        }
    }
#ifndef __SYNTHESIS__
    linear_weight_words_read() += rows * (d.d1 + (d.b >= 0 ? 4 : 0));
#endif
}

// Outputs [m0, m0 + tm) x [n0, n0 + LO) from the tiles: one pipelined loop over the tm x ceil(K / LI) MAC
// steps (LI x LO MACs each; a token's sums go to the result tile at its last step), then one over the beats
// of the tm output rows (min(LO, N - n0) words each): WPB outputs a cycle through WPB epilogues, the residual
// read a beat at a time. A beat the row covers only in part keeps its other words (read-modify-write).
template <class CFG>
void linear_compute(word_port<CFG>& arena, const layer_desc& d, int m0, int tm, int n0,
                    word_t x[CFG::TM][CFG::KMAX], word_t w[(CFG::LO + 1) / 2][CFG::KMAX][2], const i64 bias[CFG::LO]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens, typename CFG::linear_k_steps> mac_steps;
    typedef tripcount_product<typename CFG::linear_tile_tokens,
                              tripcount_beats<tripcount_const<CFG::LO>, CFG::WPB> > out_beats;
    typedef typename CFG::beat_t beat_t;
    static i64 res[CFG::TM][CFG::LO];
#pragma HLS ARRAY_PARTITION variable=res complete dim=2
#pragma HLS BIND_STORAGE variable=res type=ram_2p impl=lutram
    const int K = d.d1, N = d.d2, FA = d.fx + d.fw;
    i64 acc[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=acc complete
    int m = 0, k0 = 0;
    const int steps = tm * ((K + CFG::LI - 1) / CFG::LI);
    for (int i = 0; i < steps; ++i) {
        EDGEVIT_TRIPCOUNT(mac_steps)
#pragma HLS PIPELINE II=1
        const bool last = k0 + CFG::LI >= K;
        for (int lo = 0; lo < CFG::LO; ++lo) {
#pragma HLS UNROLL
            i64 sum = k0 == 0 ? bias[lo] : acc[lo];
            for (int li = 0; li < CFG::LI; ++li) {
#pragma HLS UNROLL
                if (k0 + li < K) sum += (i64)x[m][k0 + li] * (i64)w[lo >> 1][k0 + li][lo & 1];
            }
            acc[lo] = sum;
            if (last) res[m][lo] = sum;
        }
        if (last) {
            k0 = 0;
            ++m;
        } else {
            k0 += CFG::LI;
        }
    }
    const int cols = N - n0 < CFG::LO ? N - n0 : CFG::LO;
    int beats = 0;
    for (int em = 0; em < tm; ++em) {
        EDGEVIT_TRIPCOUNT(CFG::linear_tile_tokens)
        const int s = d.y + (m0 + em) * N + n0;
        beats += (s + cols - 1) / CFG::WPB - s / CFG::WPB + 1;
    }
    // The residual word of output word g is word g + dx of the arena: lanes sh.. of beat g / WPB + bx, then
    // of the next beat (sh = 0 when the two tensors start at the same offset within a beat, as layer_table
    // lays them out).
    const int dx = d.x2 - d.y, bx = (dx >= 0 ? dx : dx - CFG::WPB + 1) / CFG::WPB, sh = dx - bx * CFG::WPB;
    int em = 0, row = d.y + m0 * N + n0, b = row / CFG::WPB;
    for (int i = 0; i < beats; ++i) {
        EDGEVIT_TRIPCOUNT(out_beats)
#pragma HLS PIPELINE II=1
        beat_t v = 0, r0 = 0, r1 = 0;
        ap_uint<CFG::WPB> lanes = 0;
        if (d.x2 >= 0) {
            r0 = arena.beat(b + bx);
            if (sh) r1 = arena.beat(b + bx + 1);
        }
        for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
            const int lo = b * CFG::WPB + l - row;
            if (lo >= 0 && lo < cols) {
                i64 y = epilogue(res[em][lo], FA, d.act, d.fo, d.wo);
                if (d.x2 >= 0) {
                    const int rl = l + sh;
                    const word_t r = rl < CFG::WPB ? lane_of(r0, rl) : lane_of(r1, rl - CFG::WPB);
                    y = add_residual(y, d.fo, r, d.fx2, d.fo, d.wo);
                }
                set_lane(v, l, word_t(y));
                lanes[l] = 1;
            }
        }
        arena.put_beat(b, v, lanes);
        if ((b + 1) * CFG::WPB >= row + cols) {
            ++em;
            row += N;
            b = row / CFG::WPB;
        } else {
            ++b;
        }
    }
}

// x [M][K] at d.x, w [N][K] at d.w, bias [N] (64-bit) at d.b, residual [M][N] at d.x2, y [M][N] at d.y;
// M, K <= KMAX, N = d0, d1, d2; d3 = 1: weight tiles outer.
template <class CFG>
void linear_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static word_t x[CFG::TM][CFG::KMAX], w[(CFG::LO + 1) / 2][CFG::KMAX][2];
    static i64 bias[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=x cyclic factor=CFG::XBANKS dim=2
#pragma HLS ARRAY_PARTITION variable=w complete dim=1
#pragma HLS ARRAY_PARTITION variable=w cyclic factor=CFG::XBANKS dim=2
#pragma HLS ARRAY_RESHAPE variable=w complete dim=3
#pragma HLS ARRAY_PARTITION variable=bias complete
    const int M = d.d0, N = d.d2;
    if (d.d3) {
        for (int n0 = 0; n0 < N; n0 += CFG::LO) {
            EDGEVIT_TRIPCOUNT(CFG::linear_n_tiles)
            linear_load_w<CFG>(params, d, n0, w, bias);
            for (int m0 = 0; m0 < M; m0 += CFG::TM) {
                EDGEVIT_TRIPCOUNT(CFG::linear_m_tiles)
                const int tm = M - m0 < CFG::TM ? M - m0 : CFG::TM;
                linear_load_x<CFG>(arena, d, m0, tm, x);
                linear_compute<CFG>(arena, d, m0, tm, n0, x, w, bias);
            }
        }
    } else {
        for (int m0 = 0; m0 < M; m0 += CFG::TM) {
            EDGEVIT_TRIPCOUNT(CFG::linear_m_tiles)
            const int tm = M - m0 < CFG::TM ? M - m0 : CFG::TM;
            linear_load_x<CFG>(arena, d, m0, tm, x);
            for (int n0 = 0; n0 < N; n0 += CFG::LO) {
                EDGEVIT_TRIPCOUNT(CFG::linear_n_tiles)
                linear_load_w<CFG>(params, d, n0, w, bias);
                linear_compute<CFG>(arena, d, m0, tm, n0, x, w, bias);
            }
        }
    }
}

}  // namespace edgevit

#endif
