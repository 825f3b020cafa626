// LayerNorm over the last axis in one pass: the sums S1 = sum x and S2 = sum x^2 are exact integers, and
//   xhat = (C x - S1) / sqrt(C S2 - S1^2 + eps C^2)
// needs no division by C and is exact except for the table rsqrt (a zero-variance row gives xhat = 0).
// EPS_Q is eps with 2 F fractional bits (F of the input format).
#ifndef EDGEVIT_LAYERNORM_H
#define EDGEVIT_LAYERNORM_H

#include "fixed.h"
#include "fixed_math.h"

namespace edgevit {

static const int XHAT_FRAC = 16;

template <int T, int C, long long EPS_Q, class TI, class TG, class TO>
void layernorm(const TI* x, const TG* gamma, const TG* beta, TO* y) {
    const int FG = frac_bits<TG>::value;
    for (int t = 0; t < T; ++t) {
        i64 s1 = 0, s2 = 0;
        for (int c = 0; c < C; ++c) {
            i64 v = raw(x[t * C + c]);
            s1 += v;
            s2 += v * v;
        }
        i64 d = (i64)C * s2 - s1 * s1 + EPS_Q * C * C;
        int j = 0;
        i64 rs = d > 0 ? rsqrt_norm(d, j) : 0;
        for (int c = 0; c < C; ++c) {
            i64 num = (i64)C * raw(x[t * C + c]) - s1;
            i64 xhat = (num * rs) >> (j + TABLE_FRAC - XHAT_FRAC);
            i64 acc = raw(gamma[c]) * xhat + (raw(beta[c]) << XHAT_FRAC);
            y[t * C + c] = from_raw<TO, FG + XHAT_FRAC>(acc);
        }
    }
}

}  // namespace edgevit

#endif
