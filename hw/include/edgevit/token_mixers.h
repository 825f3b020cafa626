// Token mixers of EfficientFormer and SwiftFormer.
//
// pool_mixer: EfficientFormer's pooling mixer, m = avgpool_KxK(x) - x with stride 1 and padding K/2, averaging
// only the pixels inside the map (count_include_pad=False): the exact window sum times round(2^24 / count).
// With a layer scale s it fuses the block's residual: y = x + s * m.
//
// l2_normalize and additive_attention: SwiftFormer's efficient additive attention,
//   qn = q / |q|, kn = k / |k| (per token), a = qn . w_g (scale folded into w_g), a = a / |a| (over tokens),
//   g = sum_t a_t qn_t, y_t = g * kn_t.
// The query/key/proj/final projections run on the shared linear unit. Norms use the exact integer sum of
// squares and the table rsqrt; intermediates keep 16 fractional bits.
#ifndef EDGEVIT_TOKEN_MIXERS_H
#define EDGEVIT_TOKEN_MIXERS_H

#include "descriptor.h"
#include "fixed_math.h"
#include "packed.h"

namespace edgevit {

static const int NORM_FRAC = 16;

// x [H][W][C] at d.x (d0, d1, d2), K = d3; layer scale [C] at d.w (fw bits) or d.w = -1.
template <class CFG>
void pool_mixer(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, P = K / 2;
    for (int oy = 0; oy < H; ++oy) {
        EDGEVIT_TRIPCOUNT(CFG::pool_rows)
        for (int ox = 0; ox < W; ++ox) {
            EDGEVIT_TRIPCOUNT(CFG::pool_cols)
            for (int c = 0; c < C; ++c) {
                EDGEVIT_TRIPCOUNT(CFG::pool_channels)
                i64 s = 0;
                int n = 0;
                for (int ky = 0; ky < K; ++ky) {
                    EDGEVIT_TRIPCOUNT(CFG::pool_k)
                    for (int kx = 0; kx < K; ++kx) {
                        EDGEVIT_TRIPCOUNT(CFG::pool_k)
#pragma HLS PIPELINE II=1
                        int iy = oy + ky - P, ix = ox + kx - P;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
                            s += arena.get(d.x + (iy * W + ix) * C + c);
                            ++n;
                        }
                    }
                }
                const i64 r = ((1LL << 24) + n / 2) / n;  // a K*K-entry ROM in hardware
                const i64 xc = arena.get(d.x + (oy * W + ox) * C + c);
                const i64 m = s * r - (xc << 24);
                arena.put(d.y + (oy * W + ox) * C + c,
                          d.w >= 0 ? requant((i64)params.get(d.w + c) * m + (xc << (24 + d.fw)),
                                             d.fx + 24 + d.fw - d.fo, d.wo)
                                   : requant(m, d.fx + 24 - d.fo, d.wo));
            }
        }
    }
}

// v / |v| for each of M rows of length C (d0, d1); a zero row stays zero.
template <class CFG>
void l2_normalize(word_port<CFG>& arena, const layer_desc& d) {
    const int M = d.d0, C = d.d1;
    for (int t = 0; t < M; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::l2_rows)
        i64 s = 0;
        for (int c = 0; c < C; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::l2_channels)
#pragma HLS PIPELINE II=1
            s += (i64)arena.get(d.x + t * C + c) * (i64)arena.get(d.x + t * C + c);
        }
        int j = 0;
        i64 rs = s > 0 ? rsqrt_norm(s, j) : 0;
        for (int c = 0; c < C; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::l2_channels)
#pragma HLS PIPELINE II=1
            arena.put(d.y + t * C + c, requant(((i64)arena.get(d.x + t * C + c) * rs) >> (j + TABLE_FRAC - NORM_FRAC),
                                               NORM_FRAC - d.fo, d.wo));
        }
    }
}

// qn [T][D] at d.x (fx), kn [T][D] at d.x2 (fx2), w_g [D] at d.w (fw); T = d0 <= TMAX, D = d1 <= DMAX.
template <class CFG>
void additive_attention(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static i64 a[CFG::TMAX];
    i64 g[CFG::DMAX];
    const int T = d.d0, D = d.d1;
    i64 s = 0;
    for (int t = 0; t < T; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::additive_tokens)
        i64 acc = 0;
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::additive_dim)
#pragma HLS PIPELINE II=1
            acc += (i64)arena.get(d.x + t * D + k) * (i64)params.get(d.w + k);
        }
        a[t] = shift_floor(acc, d.fx + d.fw - NORM_FRAC);
        s += a[t] * a[t];
    }
    int j = 0;
    i64 rs = s > 0 ? rsqrt_norm(s, j) : 0;
    for (int k = 0; k < D; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::additive_dim)
        g[k] = 0;
    }
    for (int t = 0; t < T; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::additive_tokens)
        i64 an = (a[t] * rs) >> (j + TABLE_FRAC - NORM_FRAC);
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::additive_dim)
#pragma HLS PIPELINE II=1
            g[k] += an * (i64)arena.get(d.x + t * D + k);
        }
    }
    for (int k = 0; k < D; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::additive_dim)
        g[k] = shift_floor(g[k], d.fx);
    }
    for (int t = 0; t < T; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::additive_tokens)
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::additive_dim)
#pragma HLS PIPELINE II=1
            arena.put(d.y + t * D + k,
                      requant(g[k] * (i64)arena.get(d.x2 + t * D + k), NORM_FRAC + d.fx2 - d.fo, d.wo));
        }
    }
}

}  // namespace edgevit

#endif
