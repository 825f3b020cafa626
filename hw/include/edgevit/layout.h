// Data movement for MobileViT blocks and heads: patch unfold/fold, channel concat, global average pool.
#ifndef EDGEVIT_LAYOUT_H
#define EDGEVIT_LAYOUT_H

#include "fixed.h"

namespace edgevit {

// [H][W][C] -> [PH * PW][N][C] with N = (H / PH) * (W / PW): token n of sequence p is pixel
// (ny * PH + py, nx * PW + px), as MobileViT's unfold orders it.
template <int H, int W, int C, int PH, int PW, class T>
void unfold(const T* x, T* y) {
    const int NW = W / PW, N = (H / PH) * NW;
    for (int py = 0; py < PH; ++py)
        for (int px = 0; px < PW; ++px)
            for (int n = 0; n < N; ++n)
                for (int c = 0; c < C; ++c)
                    y[((py * PW + px) * N + n) * C + c] = x[(((n / NW) * PH + py) * W + (n % NW) * PW + px) * C + c];
}

template <int H, int W, int C, int PH, int PW, class T>
void fold(const T* x, T* y) {
    const int NW = W / PW, N = (H / PH) * NW;
    for (int py = 0; py < PH; ++py)
        for (int px = 0; px < PW; ++px)
            for (int n = 0; n < N; ++n)
                for (int c = 0; c < C; ++c)
                    y[(((n / NW) * PH + py) * W + (n % NW) * PW + px) * C + c] = x[((py * PW + px) * N + n) * C + c];
}

// [T][CA] ++ [T][CB] -> [T][CA + CB], both converted to TO.
template <int T, int CA, int CB, class TA, class TB, class TO>
void concat(const TA* a, const TB* b, TO* y) {
    for (int t = 0; t < T; ++t) {
        for (int c = 0; c < CA; ++c) y[t * (CA + CB) + c] = TO(a[t * CA + c]);
        for (int c = 0; c < CB; ++c) y[t * (CA + CB) + CA + c] = TO(b[t * CB + c]);
    }
}

// Mean over T tokens: the exact sum times round(2^24 / T).
template <int T, int C, class TI, class TO>
void avgpool(const TI* x, TO* y) {
    const i64 R = ((1LL << 24) + T / 2) / T;
    for (int c = 0; c < C; ++c) {
        i64 s = 0;
        for (int t = 0; t < T; ++t) s += raw(x[t * C + c]);
        y[c] = from_raw<TO, frac_bits<TI>::value + 24>(s * R);
    }
}

}  // namespace edgevit

#endif
