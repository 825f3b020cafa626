// Raw-integer access to ap_fixed values, the leading-one detector and table interpolation.
// The nonlinear units work on raw integers with floor shifts so that the numpy golden model
// (edgevit/hls/fixed.py) can repeat them bit for bit; results return to ap_fixed through from_raw,
// which uses ap_fixed's own rounding (AP_RND) and saturation (AP_SAT).
#ifndef EDGEVIT_FIXED_H
#define EDGEVIT_FIXED_H

#include <ap_fixed.h>

namespace edgevit {

typedef long long i64;

template <class T>
inline i64 raw(const T& x) { return (i64)x.V; }

template <class T>
inline void set_raw(T& x, i64 v) { x.V = v; }

// The value raw * 2^-F converted to T (round half up, saturate).
template <class T, int F>
inline T from_raw(i64 v) {
    ap_fixed<64, 64 - F> t;
    t.V = v;
    return T(t);
}

template <class T>
struct frac_bits { static const int value = T::width - T::iwidth; };

inline i64 shift_floor(i64 v, int s) { return s > 0 ? (v >> s) : (v << (-s)); }

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
