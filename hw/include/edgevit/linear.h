// The shared linear unit: every linear layer (Q/K/V, projection, MLP), pointwise conv and im2col'd KxK conv.
// M, K, N, formats and epilogue come from the descriptor at run time; only the lanes are compile-time:
// each cycle LI input lanes times LO output lanes (LI * LO MACs). Tiles on chip: TM tokens of input
// (TM x KMAX words) and LO weight rows (LO x KMAX words). The descriptor picks the loop order (d3): token tiles
// outer (each weight tile re-read once per token tile) or weight tiles outer (each input tile re-read once per
// weight tile), whichever moves fewer words. The accumulator is exact (64 bits), so neither the tiling nor the
// order changes a result. Epilogue: bias, activation and requantisation (activation.h), optional residual.
#ifndef EDGEVIT_LINEAR_H
#define EDGEVIT_LINEAR_H

#include "activation.h"
#include "descriptor.h"

namespace edgevit {

template <int LI, int LO, int TM, int KMAX>
struct linear_tiles {
    word_t x[TM][KMAX], w[LO][KMAX];
    i64 bias[LO];

    void load_x(const word_t* arena, const layer_desc& d, int m0, int tm) {
        for (int m = 0; m < tm; ++m)
            for (int k = 0; k < d.d1; ++k) x[m][k] = arena[d.x + (m0 + m) * d.d1 + k];
    }

    void load_w(const word_t* params, const layer_desc& d, int n0) {
        for (int lo = 0; lo < LO; ++lo) {
            const bool in = n0 + lo < d.d2;
            for (int k = 0; k < d.d1; ++k) w[lo][k] = in ? params[d.w + (n0 + lo) * d.d1 + k] : word_t(0);
            bias[lo] = in && d.b >= 0 ? read_i64(params + d.b + 4 * (n0 + lo)) : 0;
        }
    }

    // Outputs [m0, m0 + tm) x [n0, n0 + LO) from the tiles in place.
    void compute(word_t* arena, const layer_desc& d, int m0, int tm, int n0) {
        const int K = d.d1, N = d.d2, FA = d.fx + d.fw;
        i64 acc[LO];
#pragma HLS ARRAY_PARTITION variable=acc complete
        for (int m = 0; m < tm; ++m) {
            for (int lo = 0; lo < LO; ++lo) acc[lo] = bias[lo];
            for (int k0 = 0; k0 < K; k0 += LI) {
#pragma HLS PIPELINE II=1
                for (int lo = 0; lo < LO; ++lo)
                    for (int li = 0; li < LI; ++li)
                        if (k0 + li < K) acc[lo] += (i64)x[m][k0 + li] * (i64)w[lo][k0 + li];
            }
            const int row = (m0 + m) * N;
            for (int lo = 0; lo < LO && n0 + lo < N; ++lo) {
                i64 v = epilogue(acc[lo], FA, d.act, d.fo, d.wo);
                if (d.x2 >= 0) v = add_residual(v, d.fo, arena[d.x2 + row + n0 + lo], d.fx2, d.fo, d.wo);
                arena[d.y + row + n0 + lo] = v;
            }
        }
    }
};

// x [M][K] at d.x, w [N][K] at d.w, bias [N] (64-bit) at d.b, residual [M][N] at d.x2, y [M][N] at d.y;
// M, K <= KMAX, N = d0, d1, d2; d3 = 1: weight tiles outer.
template <int LI, int LO, int TM, int KMAX>
void linear_unit(const word_t* params, word_t* arena, const layer_desc& d) {
    static linear_tiles<LI, LO, TM, KMAX> t;
#pragma HLS ARRAY_PARTITION variable=t.x cyclic factor=LI dim=2
#pragma HLS ARRAY_PARTITION variable=t.w complete dim=1
#pragma HLS ARRAY_PARTITION variable=t.w cyclic factor=LI dim=2
    const int M = d.d0, N = d.d2;
    if (d.d3) {
        for (int n0 = 0; n0 < N; n0 += LO) {
            t.load_w(params, d, n0);
            for (int m0 = 0; m0 < M; m0 += TM) {
                const int tm = M - m0 < TM ? M - m0 : TM;
                t.load_x(arena, d, m0, tm);
                t.compute(arena, d, m0, tm, n0);
            }
        }
    } else {
        for (int m0 = 0; m0 < M; m0 += TM) {
            const int tm = M - m0 < TM ? M - m0 : TM;
            t.load_x(arena, d, m0, tm);
            for (int n0 = 0; n0 < N; n0 += LO) {
                t.load_w(params, d, n0);
                t.compute(arena, d, m0, tm, n0);
            }
        }
    }
}

}  // namespace edgevit

#endif
