// Token mixers of EfficientFormer and SwiftFormer.
//
// pool_mixer: EfficientFormer's pooling mixer, m = avgpool_KxK(x) - x with stride 1 and padding K/2, averaging
// only the pixels inside the map (count_include_pad=False): the exact window sum times round(2^24 / count).
// With a layer scale s (else null) it fuses the block's residual: y = x + s * m.
//
// l2_normalize and additive_attention: SwiftFormer's efficient additive attention,
//   qn = q / |q|, kn = k / |k| (per token), a = qn . w_g (scale folded into w_g), a = a / |a| (over tokens),
//   g = sum_t a_t qn_t, y_t = g * kn_t.
// The query/key/proj/final projections run on the shared linear unit. Norms use the exact integer sum of
// squares and the table rsqrt; intermediates keep 16 fractional bits.
#ifndef EDGEVIT_TOKEN_MIXERS_H
#define EDGEVIT_TOKEN_MIXERS_H

#include "fixed.h"
#include "fixed_math.h"

namespace edgevit {

static const int NORM_FRAC = 16;

template <int H, int W, int C, int K, class TI, class TS, class TO>
void pool_mixer(const TI* x, const TS* scale, TO* y) {
    const int F = frac_bits<TI>::value, FS = frac_bits<TS>::value, P = K / 2;
    for (int oy = 0; oy < H; ++oy)
        for (int ox = 0; ox < W; ++ox)
            for (int c = 0; c < C; ++c) {
                i64 s = 0;
                int n = 0;
                for (int ky = 0; ky < K; ++ky)
                    for (int kx = 0; kx < K; ++kx) {
                        int iy = oy + ky - P, ix = ox + kx - P;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W) {
                            s += raw(x[(iy * W + ix) * C + c]);
                            ++n;
                        }
                    }
                const i64 r = ((1LL << 24) + n / 2) / n;  // a K*K-entry ROM in hardware
                i64 xc = raw(x[(oy * W + ox) * C + c]);
                i64 m = s * r - (xc << 24);
                y[(oy * W + ox) * C + c] = scale ? from_raw<TO, F + 24 + FS>(raw(scale[c]) * m + (xc << (24 + FS)))
                                                 : from_raw<TO, F + 24>(m);
            }
}

// v / |v| for each of T rows of length C (a zero row stays zero).
template <int T, int C, class TI, class TO>
void l2_normalize(const TI* x, TO* y) {
    for (int t = 0; t < T; ++t) {
        i64 s = 0;
        for (int c = 0; c < C; ++c) s += raw(x[t * C + c]) * raw(x[t * C + c]);
        int j = 0;
        i64 rs = s > 0 ? rsqrt_norm(s, j) : 0;
        for (int c = 0; c < C; ++c)
            y[t * C + c] = from_raw<TO, NORM_FRAC>((raw(x[t * C + c]) * rs) >> (j + TABLE_FRAC - NORM_FRAC));
    }
}

template <int T, int D, class TQ, class TK, class TW, class TO>
void additive_attention(const TQ* qn, const TK* kn, const TW* wg, TO* y) {
    const int FQ = frac_bits<TQ>::value, FK = frac_bits<TK>::value, FW = frac_bits<TW>::value;
    static i64 a[T];
    i64 s = 0;
    for (int t = 0; t < T; ++t) {
        i64 acc = 0;
        for (int d = 0; d < D; ++d) acc += raw(qn[t * D + d]) * raw(wg[d]);
        a[t] = shift_floor(acc, FQ + FW - NORM_FRAC);
        s += a[t] * a[t];
    }
    int j = 0;
    i64 rs = s > 0 ? rsqrt_norm(s, j) : 0;
    i64 g[D];
    for (int d = 0; d < D; ++d) g[d] = 0;
    for (int t = 0; t < T; ++t) {
        i64 an = (a[t] * rs) >> (j + TABLE_FRAC - NORM_FRAC);
        for (int d = 0; d < D; ++d) g[d] += an * raw(qn[t * D + d]);
    }
    for (int d = 0; d < D; ++d) g[d] = shift_floor(g[d], FQ);
    for (int t = 0; t < T; ++t)
        for (int d = 0; d < D; ++d) y[t * D + d] = from_raw<TO, NORM_FRAC + FK>(g[d] * raw(kn[t * D + d]));
}

}  // namespace edgevit

#endif
