// The shared linear unit: every linear layer (Q/K/V, projection, MLP), pointwise conv and im2col'd KxK conv.
// M, K, N, formats and epilogue come from the descriptor at run time; only the lanes are compile-time:
// each cycle LI input lanes times LO output lanes (LI * LO MACs, the unrolled body of the pipelined k loop).
// Tiles on chip: TM tokens of input (TM x KMAX words, LI banks) and LO weight rows (LO x KMAX words, LO x LI
// banks), so all LI * LO operands of a cycle come from distinct banks. The descriptor picks the loop order
// (d3): token tiles outer (each weight tile re-read once per token tile) or weight tiles outer (each input tile
// re-read once per weight tile), whichever moves fewer words. Tile loads and compute run one after the other
// (no ping-pong yet). The accumulator is exact (64 bits), so neither the tiling nor the order changes a
// result. Epilogue: bias, activation and requantisation (activation.h), optional residual.
#ifndef EDGEVIT_LINEAR_H
#define EDGEVIT_LINEAR_H

#include "activation.h"
#include "descriptor.h"

namespace edgevit {

#ifndef __SYNTHESIS__
// C-simulation only: parameter words (weights and biases) the unit has read from DDR, in total. The MoE unit
// takes differences of it to count each expert's reads.
inline long& linear_weight_words_read() { static long n = 0; return n; }
#endif

// Tokens [m0, m0 + tm) of x [M][K] into the input tile.
template <class CFG>
void linear_load_x(const word_t* arena, const layer_desc& d, int m0, int tm, word_t x[CFG::TM][CFG::KMAX]) {
    for (int m = 0; m < tm; ++m) {
        EDGEVIT_TRIPCOUNT(CFG::linear_tile_tokens)
        for (int k = 0; k < d.d1; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::linear_k)
#pragma HLS PIPELINE II=1
            x[m][k] = arena[d.x + (m0 + m) * d.d1 + k];
        }
    }
}

// Weight rows [n0, n0 + LO) of w [N][K] and their biases into the weight tile (zeros past N).
template <class CFG>
void linear_load_w(const word_t* params, const layer_desc& d, int n0, word_t w[CFG::LO][CFG::KMAX],
                   i64 bias[CFG::LO]) {
    for (int lo = 0; lo < CFG::LO; ++lo) {
        const bool in = n0 + lo < d.d2;
        for (int k = 0; k < d.d1; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::linear_k)
#pragma HLS PIPELINE II=1
            w[lo][k] = in ? params[d.w + (n0 + lo) * d.d1 + k] : word_t(0);
        }
        bias[lo] = in && d.b >= 0 ? read_i64(params + d.b + 4 * (n0 + lo)) : 0;
#ifndef __SYNTHESIS__
        if (in) linear_weight_words_read() += d.d1 + (d.b >= 0 ? 4 : 0);
#endif
    }
}

// Outputs [m0, m0 + tm) x [n0, n0 + LO) from the tiles.
template <class CFG>
void linear_compute(word_t* arena, const layer_desc& d, int m0, int tm, int n0, word_t x[CFG::TM][CFG::KMAX],
                    word_t w[CFG::LO][CFG::KMAX], const i64 bias[CFG::LO]) {
    const int K = d.d1, N = d.d2, FA = d.fx + d.fw;
    i64 acc[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=acc complete
    for (int m = 0; m < tm; ++m) {
        EDGEVIT_TRIPCOUNT(CFG::linear_tile_tokens)
        for (int lo = 0; lo < CFG::LO; ++lo) {
#pragma HLS UNROLL
            acc[lo] = bias[lo];
        }
        for (int k0 = 0; k0 < K; k0 += CFG::LI) {
            EDGEVIT_TRIPCOUNT(CFG::linear_k_steps)
#pragma HLS PIPELINE II=1
            for (int lo = 0; lo < CFG::LO; ++lo) {
#pragma HLS UNROLL
                for (int li = 0; li < CFG::LI; ++li) {
#pragma HLS UNROLL
                    if (k0 + li < K) acc[lo] += (i64)x[m][k0 + li] * (i64)w[lo][k0 + li];
                }
            }
        }
        const int row = (m0 + m) * N;
        for (int lo = 0; lo < CFG::LO; ++lo) {
#pragma HLS PIPELINE II=1
            if (n0 + lo < N) {
                i64 v = epilogue(acc[lo], FA, d.act, d.fo, d.wo);
                if (d.x2 >= 0) v = add_residual(v, d.fo, arena[d.x2 + row + n0 + lo], d.fx2, d.fo, d.wo);
                arena[d.y + row + n0 + lo] = v;
            }
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
