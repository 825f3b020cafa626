// int8 requantisation for QDQ models, with onnxruntime's rule done in integers (golden model:
// edgevit/hls/requant.py). onnxruntime computes y = clip(round_half_even(float32(float32(acc) * M)) + zy)
// with M = x_scale * w_scale / y_scale in float32. Here M = m0 * 2^-n exactly (m0 is float32 M's 24-bit
// mantissa, n its exponent, both fixed at compile time and read per output channel), and each float32
// rounding is a rounding to 24 significant bits, half to even (a leading-one detector and a shift). So the
// result is onnxruntime's wherever its kernel computes exactly that. Results are stored minus the zero point
// (tensors hold q - zero_point, so zero padding is a real zero).
#ifndef EDGEVIT_REQUANT_H
#define EDGEVIT_REQUANT_H

#include "fixed.h"

namespace edgevit {

static const int REQUANT_RECORD_WORDS = 4;  // per output channel: m0 >> 12, m0 & 4095, n, y zero point

struct requant_param {
    i64 m0;
    int n, zy;
};

// v * 2^-s rounded half to even (s >= 1).
inline i64 rne_shift(i64 v, int s) {
    const i64 q = v >> s, r = v - (q << s), half = 1LL << (s - 1);
    return q + ((r > half || (r == half && (q & 1))) ? 1 : 0);
}

// v rounded to 24 significant bits, half to even: the value float32 would hold.
inline i64 round_float32(i64 v) {
    const int k = msb(v < 0 ? -v : v);
    if (k < 24) return v;
    const int s = k - 23;
    return rne_shift(v, s) << s;
}

// The int accumulator acc to int8 minus zy; with relu the result is clipped at the zero point too.
inline i64 requantize_int8(i64 acc, const requant_param& p, bool relu) {
    const i64 y = rne_shift(round_float32(round_float32(acc) * p.m0), p.n);
    i64 lo = -128 - p.zy;
    const i64 hi = 127 - p.zy;
    if (relu && lo < 0) lo = 0;
    return y < lo ? lo : (y > hi ? hi : y);
}

template <class SOURCE>
inline requant_param read_requant(SOURCE& params, int off) {
    requant_param p;
    p.m0 = ((i64)params.get(off).to_int() << 12) | (i64)params.get(off + 1).to_int();
    p.n = params.get(off + 2).to_int();
    p.zy = params.get(off + 3).to_int();
    return p;
}

}  // namespace edgevit

#endif
