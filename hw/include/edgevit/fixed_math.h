// Fixed-point exp, reciprocal and reciprocal square root: table plus linear interpolation, no floating point.
#ifndef EDGEVIT_FIXED_MATH_H
#define EDGEVIT_FIXED_MATH_H

#include "fixed.h"
#include "tables.h"

namespace edgevit {

static const int EXP_FRAC = 16;  // exp_neg returns e^x with 16 fractional bits (1.0 == 1 << 16)

// e^x for x <= 0 given as raw with F fractional bits: 2^(x log2 e), split into 2^n * 2^f.
inline i64 exp_neg(i64 x, int F) {
    i64 t = (x * LOG2E_Q) >> F;  // x log2(e) with LOG2E_FRAC fractional bits
    i64 n = t >> LOG2E_FRAC;     // integer part (<= 0)
    i64 f = t & ((1LL << LOG2E_FRAC) - 1);
    if (n < -40) return 0;
    const int bits = LOG2E_FRAC - EXP2_STEP_LOG2;
    i64 p = interp(EXP2, f >> bits, f & ((1LL << bits) - 1), bits);  // 2^f, TABLE_FRAC bits
    return p >> (TABLE_FRAC - EXP_FRAC - n);
}

// 1/l for l >= 1 << 16 given with 16 fractional bits: returns m with TABLE_FRAC bits and k such that
// 1/l = m * 2^(16 - k) (k is the leading-one position of l).
inline i64 recip_norm(i64 l, int& k) {
    k = msb(l);
    i64 mant = l >> (k - 16);  // [1, 2) with 16 fractional bits
    const int bits = 16 - RECIP_STEP_LOG2;
    return interp(RECIP, (mant - (1LL << 16)) >> bits, mant & ((1LL << bits) - 1), bits);
}

// 1/sqrt(d) for an integer d >= 1: returns m with TABLE_FRAC bits and j with 1/sqrt(d) = m * 2^-j.
inline i64 rsqrt_norm(i64 d, int& j) {
    j = msb(d) >> 1;
    i64 m = shift_floor(d, 2 * j - 16);  // [1, 4) with 16 fractional bits
    const int bits = 16 - RSQRT_STEP_LOG2;
    return interp(RSQRT, (m - (1LL << 16)) >> bits, m & ((1LL << bits) - 1), bits);
}

}  // namespace edgevit

#endif
