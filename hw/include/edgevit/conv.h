// Convolutions on channels-last [H][W][C] maps. Depthwise KxK has its own small unit (C lanes of K*K MACs);
// pointwise and dense KxK convolutions run on the shared linear unit, the latter after im2col, which in
// hardware is a line buffer feeding the unit rather than a materialised matrix.
#ifndef EDGEVIT_CONV_H
#define EDGEVIT_CONV_H

#include "activation.h"
#include "fixed.h"

namespace edgevit {

// w is [C][K][K]; output [HO][WO][C] with HO = (H + 2 PAD - K) / S + 1.
template <int H, int W, int C, int K, int S, int PAD, int ACT, class TI, class TW, class TB, class TO>
void depthwise_conv(const TI* x, const TW* w, const TB* b, TO* y) {
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1;
    typedef ap_fixed<TI::width + TW::width + 16, TI::iwidth + TW::iwidth + 16> acc_t;
    for (int oy = 0; oy < HO; ++oy)
        for (int ox = 0; ox < WO; ++ox)
            for (int c = 0; c < C; ++c) {
                acc_t acc = b ? acc_t(b[c]) : acc_t(0);
                for (int ky = 0; ky < K; ++ky)
                    for (int kx = 0; kx < K; ++kx) {
                        int iy = oy * S + ky - PAD, ix = ox * S + kx - PAD;
                        if (iy >= 0 && iy < H && ix >= 0 && ix < W)
                            acc += x[(iy * W + ix) * C + c] * w[(c * K + ky) * K + kx];
                    }
                y[(oy * WO + ox) * C + c] = activate<ACT>(TO(acc));
            }
}

// [H][W][C] -> [HO * WO][K * K * C], patch order (ky, kx, c), zeros outside the map.
template <int H, int W, int C, int K, int S, int PAD, class T>
void im2col(const T* x, T* cols) {
    const int HO = (H + 2 * PAD - K) / S + 1, WO = (W + 2 * PAD - K) / S + 1;
    for (int oy = 0; oy < HO; ++oy)
        for (int ox = 0; ox < WO; ++ox)
            for (int ky = 0; ky < K; ++ky)
                for (int kx = 0; kx < K; ++kx)
                    for (int c = 0; c < C; ++c) {
                        int iy = oy * S + ky - PAD, ix = ox * S + kx - PAD;
                        bool in = iy >= 0 && iy < H && ix >= 0 && ix < W;
                        cols[((oy * WO + ox) * K * K + ky * K + kx) * C + c] = in ? x[(iy * W + ix) * C + c] : T(0);
                    }
}

}  // namespace edgevit

#endif
