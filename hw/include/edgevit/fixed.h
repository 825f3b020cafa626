// Raw-integer arithmetic of the units. Tensors are raw integers r meaning r * 2^-F; the format (F and the
// width) of each tensor is a runtime setting from the layer descriptor, so one unit serves every layer.
// Storage is 16-bit words (word_t); products and sums are exact in 64 bits; a result is requantised once,
// by a round-half-up shift followed by saturation to the destination width (requant), exactly as
// fixed.convert in the numpy golden model (edgevit/hls/fixed.py).
#ifndef EDGEVIT_FIXED_H
#define EDGEVIT_FIXED_H

#include <ap_int.h>

namespace edgevit {

typedef long long i64;
typedef ap_int<16> word_t;

inline i64 shift_floor(i64 v, int s) { return s > 0 ? (v >> s) : (v << (-s)); }

// v * 2^-s rounded half up (s > 0) or exact (s <= 0), then saturated to a signed w-bit integer.
inline i64 requant(i64 v, int s, int w) {
    i64 r = s > 0 ? ((v + (1LL << (s - 1))) >> s) : (v << (-s));
    const i64 hi = (1LL << (w - 1)) - 1, lo = -hi - 1;
    return r < lo ? lo : (r > hi ? hi : r);
}

// A 64-bit parameter (a bias at the accumulator's scale) stored as four little-endian 16-bit words.
inline i64 read_i64(const word_t* p) {
    i64 v = 0;
    for (int k = 0; k < 4; ++k) v |= (i64)(unsigned short)p[k].to_int() << (16 * k);
    return v;
}

inline int msb(i64 v) {
    int k = 0;
    for (int b = 1; b < 63; ++b)
        if ((v >> b) > 0) k = b;
    return k;
}

// table[idx] + (table[idx + 1] - table[idx]) * r / 2^bits, the same floor as the golden model.
inline i64 interp(const int* table, i64 idx, i64 r, int bits) {
    i64 a = table[idx], b = table[idx + 1];
    return a + (((b - a) * r) >> bits);
}

}  // namespace edgevit

#endif
