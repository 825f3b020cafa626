// The shared linear unit: y[t][co] = epilogue(sum_ci x[t][ci] * w[co][ci] + b[co]).
// One unit serves Q/K/V, projections, MLPs, pointwise and (after im2col) KxK convolutions. Each cycle it
// multiplies LI input lanes by LO output lanes (LI * LO MACs); the accumulator is exact, so the tiling does
// not change the result. Epilogue: bias, round/saturate to TO, activation, residual add (score scaling is
// folded into the Q weights at code generation).
#ifndef EDGEVIT_LINEAR_H
#define EDGEVIT_LINEAR_H

#include "activation.h"
#include "fixed.h"

namespace edgevit {

template <int T, int CI, int CO, int LI, int LO, int ACT, class TI, class TW, class TB, class TO, class TR>
void linear_unit(const TI* x, const TW* w, const TB* b, const TR* res, TO* y) {
    // 16 guard bits: exact for sums of up to 65536 products.
    typedef ap_fixed<TI::width + TW::width + 16, TI::iwidth + TW::iwidth + 16> acc_t;
    for (int t = 0; t < T; ++t) {
        for (int co0 = 0; co0 < CO; co0 += LO) {
            acc_t acc[LO];
            for (int lo = 0; lo < LO; ++lo) acc[lo] = (b && co0 + lo < CO) ? acc_t(b[co0 + lo]) : acc_t(0);
            for (int ci0 = 0; ci0 < CI; ci0 += LI) {
                for (int lo = 0; lo < LO; ++lo) {      // unrolled: LO x LI multipliers
                    for (int li = 0; li < LI; ++li) {
                        int co = co0 + lo, ci = ci0 + li;
                        if (co < CO && ci < CI) acc[lo] += x[t * CI + ci] * w[co * CI + ci];
                    }
                }
            }
            for (int lo = 0; lo < LO && co0 + lo < CO; ++lo) {
                int co = co0 + lo;
                TO v = activate<ACT>(TO(acc[lo]));
                if (res) v = TO(v + res[t * CO + co]);
                y[t * CO + co] = v;
            }
        }
    }
}

}  // namespace edgevit

#endif
