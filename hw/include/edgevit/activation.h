// The epilogue shared by the linear and depthwise units: accumulator -> activation -> output format.
// ReLU and "none" requantise the accumulator straight to the layer's output format. The table activations run
// in one fixed internal format, ACT_BITS wide with ACT_FRAC fractional bits, whatever the layer: the
// accumulator is requantised to it, the activation is applied there, and the result is requantised to the
// layer's output format. GELU(x) = ReLU(x) - delta(|x|) with delta(a) = a * Phi(-a) from a 177-entry table
// (step 1/32, |x| < 5.5); Sigmoid from a table on [0, 16] (sigma(-x) = 1 - sigma(x)); SiLU = x * sigmoid(x);
// Hardswish = x * (clip(x + 3, 0, 6) / 6) with one multiply by the constant 1/6.
#ifndef EDGEVIT_ACTIVATION_H
#define EDGEVIT_ACTIVATION_H

#include "fixed.h"
#include "tables.h"

namespace edgevit {

enum Act { ACT_NONE = 0, ACT_RELU = 1, ACT_GELU = 2, ACT_SILU = 3, ACT_HSWISH = 4, ACT_SIGMOID = 5 };

static const int ACT_FRAC = TABLE_FRAC;  // 20 fractional bits,
static const int ACT_BITS = 40;          // range +-2^19
static const i64 ONE_SIXTH_Q = ((1LL << TABLE_FRAC) + 3) / 6;  // round(2^20 / 6)

// Table lookup for |x| given with ACT_FRAC fractional bits on a grid of 2^-step_log2; beyond the table the
// last entry.
inline i64 table_abs(const int* table, int entries, int step_log2, i64 a) {
    const int bits = ACT_FRAC - step_log2;
    i64 idx = a >> bits;
    if (idx >= entries - 1) return table[entries - 1];
    return interp(table, idx, a & ((1LL << bits) - 1), bits);
}

inline i64 sigmoid_raw(i64 v) {  // TABLE_FRAC fractional bits
    i64 s = table_abs(SIGMOID, SIGMOID_ENTRIES, SIGMOID_STEP_LOG2, v < 0 ? -v : v);
    return v < 0 ? (1LL << TABLE_FRAC) - s : s;
}

// act(v) for v in the internal format; returns raw with fy fractional bits.
inline i64 activate(i64 v, int act, int& fy) {
    fy = ACT_FRAC;
    if (act == ACT_GELU)
        return (v > 0 ? v : 0) - table_abs(GELU_DELTA, GELU_DELTA_ENTRIES, GELU_STEP_LOG2, v < 0 ? -v : v);
    if (act == ACT_SIGMOID) return sigmoid_raw(v);
    fy = 2 * ACT_FRAC;
    if (act == ACT_SILU) return v * sigmoid_raw(v);
    i64 t = v + (3LL << ACT_FRAC);  // ACT_HSWISH
    t = t < 0 ? 0 : (t > (6LL << ACT_FRAC) ? (6LL << ACT_FRAC) : t);
    return v * ((t * ONE_SIXTH_Q) >> TABLE_FRAC);
}

// The accumulator acc (fa fractional bits) through activation act to the output format (fo bits, wo wide).
inline i64 epilogue(i64 acc, int fa, int act, int fo, int wo) {
    if (act == ACT_NONE || act == ACT_RELU) {
        i64 y = requant(acc, fa - fo, wo);
        return act == ACT_RELU && y < 0 ? 0 : y;
    }
    int fy = 0;
    i64 y = activate(requant(acc, fa - ACT_FRAC, ACT_BITS), act, fy);
    return requant(y, fy - fo, wo);
}

// y (fy bits) + res (fr bits), summed exactly at the finer of the two, then requantised to fo bits, wo wide.
inline i64 add_residual(i64 y, int fy, i64 res, int fr, int fo, int wo) {
    const int f = fy > fr ? fy : fr;
    return requant(shift_floor(y, fy - f) + shift_floor(res, fr - f), f - fo, wo);
}

}  // namespace edgevit

#endif
