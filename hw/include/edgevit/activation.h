// Activation units applied in the epilogue of the shared linear unit and the convolutions.
// GELU(x) = ReLU(x) - delta(|x|) with delta(a) = a * Phi(-a) from a 177-entry table (step 1/32, |x| < 5.5);
// Sigmoid from a table on [0, 16] (sigma(-x) = 1 - sigma(x)); SiLU = x * sigmoid(x); Hardswish needs no
// table: x * clip(x + 3, 0, 6) / 6 is one multiply by a constant.
#ifndef EDGEVIT_ACTIVATION_H
#define EDGEVIT_ACTIVATION_H

#include "fixed.h"
#include "tables.h"

namespace edgevit {

enum Act { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_SILU = 3, ACT_HSWISH = 4, ACT_SIGMOID = 5 };

static const i64 ONE_SIXTH_Q = ((1LL << TABLE_FRAC) + 3) / 6;  // round(2^20 / 6)

// Table lookup for |x| given with F fractional bits on a grid of 2^-step_log2; entries beyond the table give
// the last entry.
template <int F>
inline i64 table_abs(const int* table, int entries, int step_log2, i64 a) {
    const int bits = F - step_log2;
    i64 idx = bits >= 0 ? (a >> bits) : (a << (-bits));
    if (idx >= entries - 1) return table[entries - 1];
    if (bits <= 0) return table[idx];
    return interp(table, idx, a & ((1LL << bits) - 1), bits);
}

template <int F>
inline i64 sigmoid_raw(i64 x) {  // TABLE_FRAC fractional bits
    i64 s = table_abs<F>(SIGMOID, SIGMOID_ENTRIES, SIGMOID_STEP_LOG2, x < 0 ? -x : x);
    return x < 0 ? (1LL << TABLE_FRAC) - s : s;
}

template <int ACT, class T>
inline T activate(T x) {
    const int F = frac_bits<T>::value;
    i64 v = raw(x);
    if (ACT == ACT_RELU) return v > 0 ? x : T(0);
    if (ACT == ACT_GELU) {
        const int FY = F > TABLE_FRAC ? F : TABLE_FRAC;
        i64 d = table_abs<F>(GELU_DELTA, GELU_DELTA_ENTRIES, GELU_STEP_LOG2, v < 0 ? -v : v);
        i64 y = (v > 0 ? shift_floor(v, F - FY) : 0) - shift_floor(d, TABLE_FRAC - FY);
        return from_raw<T, FY>(y);
    }
    if (ACT == ACT_SIGMOID) return from_raw<T, TABLE_FRAC>(sigmoid_raw<F>(v));
    if (ACT == ACT_SILU) return from_raw<T, F + TABLE_FRAC>(v * sigmoid_raw<F>(v));
    if (ACT == ACT_HSWISH) {
        i64 t = v + (3LL << F);
        t = t < 0 ? 0 : (t > (6LL << F) ? (6LL << F) : t);
        return from_raw<T, 2 * F + TABLE_FRAC>(v * t * ONE_SIXTH_Q);
    }
    return x;
}

}  // namespace edgevit

#endif
