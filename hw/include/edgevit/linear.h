// The shared linear unit: every linear layer (Q/K/V, projection, MLP), pointwise conv and im2col'd KxK conv.
// M, K, N, formats and epilogue come from the descriptor at run time; only the lanes are compile-time:
// each cycle LI input lanes times LO output lanes (LI * LO MACs, the unrolled body of the pipelined k loop).
// Tiles on chip: TM tokens of input (TM x KMAX words, LI banks) and LO weight rows (LO x KMAX words, LO x LI
// banks), so all LI * LO operands of a cycle come from distinct banks. The descriptor picks the loop order
// (d3): token tiles outer (each weight tile re-read once per token tile) or weight tiles outer (each input tile
// re-read once per weight tile), whichever moves fewer words. Each tile load, the MAC steps of a tile and its
// write-back are one pipelined loop each, run one after the other (no ping-pong yet). The accumulator is exact
// (64 bits), so neither the tiling nor the order changes a result. Epilogue: bias, activation and
// requantisation (activation.h), optional residual.
#ifndef EDGEVIT_LINEAR_H
#define EDGEVIT_LINEAR_H

#include "activation.h"
#include "descriptor.h"
#include "tripcount_product.h"

namespace edgevit {

#ifndef __SYNTHESIS__
// C-simulation only: parameter words (weights and biases) the unit has read from DDR, in total. The MoE unit
// takes differences of it to count each expert's reads.
inline long& linear_weight_words_read() { static long n = 0; return n; }
#endif

// Tokens [m0, m0 + tm) of x [M][K] into the input tile: one pipelined pass over its tm x K words, which are
// consecutive in DDR (one m_axi request stream per tile, not one per token).
template <class CFG>
void linear_load_x(const word_t* arena, const layer_desc& d, int m0, int tm, word_t x[CFG::TM][CFG::KMAX]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens, typename CFG::linear_k> tile_words;
    int m = 0, k = 0;
    for (int i = 0; i < tm * d.d1; ++i) {
        EDGEVIT_TRIPCOUNT(tile_words)
#pragma HLS PIPELINE II=1
        x[m][k] = arena[d.x + m0 * d.d1 + i];
        if (++k == d.d1) {
            k = 0;
            ++m;
        }
    }
}

// Weight rows [n0, n0 + LO) of w [N][K] and their biases into the weight tile, each in one pipelined pass (the
// rows are consecutive in DDR, and so are their 64-bit biases, four words each). Lanes past N keep stale
// words: their sums are never written.
template <class CFG>
void linear_load_w(const word_t* params, const layer_desc& d, int n0, word_t w[CFG::LO][CFG::KMAX],
                   i64 bias[CFG::LO]) {
    typedef tripcount<CFG::linear_k::min, CFG::linear_k::max * CFG::LO, CFG::linear_k::avg * CFG::LO> tile_words;
    typedef tripcount<4, 4 * CFG::LO, 4 * CFG::LO> bias_words;
    const int rows = d.d2 - n0 < CFG::LO ? d.d2 - n0 : CFG::LO;
    int lo = 0, k = 0;
    for (int i = 0; i < rows * d.d1; ++i) {
        EDGEVIT_TRIPCOUNT(tile_words)
#pragma HLS PIPELINE II=1
        w[lo][k] = params[d.w + n0 * d.d1 + i];
        if (++k == d.d1) {
            k = 0;
            ++lo;
        }
    }
    for (int l = 0; l < CFG::LO; ++l) {
#pragma HLS UNROLL
        bias[l] = 0;
    }
    if (d.b >= 0) {
        for (int i = 0; i < 4 * rows; ++i) {  // read_i64's little-endian words, assembled in place
            EDGEVIT_TRIPCOUNT(bias_words)
#pragma HLS PIPELINE II=1
            bias[i >> 2] |= (i64)(unsigned short)params[d.b + 4 * n0 + i].to_int() << (16 * (i & 3));
        }
    }
#ifndef __SYNTHESIS__
    linear_weight_words_read() += rows * (d.d1 + (d.b >= 0 ? 4 : 0));
#endif
}

// Outputs [m0, m0 + tm) x [n0, n0 + LO) from the tiles: one pipelined loop over the tm x ceil(K / LI) MAC
// steps (LI x LO MACs each; a token's sums go to the result tile at its last step), then one over the tm x
// min(LO, N - n0) outputs through the epilogue to DDR.
template <class CFG>
void linear_compute(word_t* arena, const layer_desc& d, int m0, int tm, int n0, word_t x[CFG::TM][CFG::KMAX],
                    word_t w[CFG::LO][CFG::KMAX], const i64 bias[CFG::LO]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens, typename CFG::linear_k_steps> mac_steps;
    typedef tripcount_product<typename CFG::linear_tile_tokens, tripcount_const<CFG::LO> > tile_outputs;
    static i64 res[CFG::TM][CFG::LO];
#pragma HLS ARRAY_PARTITION variable=res complete dim=2
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
                if (k0 + li < K) sum += (i64)x[m][k0 + li] * (i64)w[lo][k0 + li];
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
    int em = 0, lo = 0;
    for (int i = 0; i < tm * cols; ++i) {
        EDGEVIT_TRIPCOUNT(tile_outputs)
#pragma HLS PIPELINE II=1
        const int at = (m0 + em) * N + n0 + lo;
        i64 v = epilogue(res[em][lo], FA, d.act, d.fo, d.wo);
        if (d.x2 >= 0) v = add_residual(v, d.fo, arena[d.x2 + at], d.fx2, d.fo, d.wo);
        arena[d.y + at] = v;
        if (++lo == cols) {
            lo = 0;
            ++em;
        }
    }
}

// x [M][K] at d.x, w [N][K] at d.w, bias [N] (64-bit) at d.b, residual [M][N] at d.x2, y [M][N] at d.y;
// M, K <= KMAX, N = d0, d1, d2; d3 = 1: weight tiles outer.
template <class CFG>
void linear_unit(const word_t* params, word_t* arena, const layer_desc& d) {
    static word_t x[CFG::TM][CFG::KMAX], w[CFG::LO][CFG::KMAX];
    static i64 bias[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=x cyclic factor=CFG::LI dim=2
#pragma HLS ARRAY_PARTITION variable=w complete dim=1
#pragma HLS ARRAY_PARTITION variable=w cyclic factor=CFG::LI dim=2
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
