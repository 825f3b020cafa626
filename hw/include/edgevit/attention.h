// Multi-head attention with single-pass (online) softmax fused into Q K^T.
//
// Per query row, keys are visited once in order; a running max m, running sum l and output accumulator o are
// kept, with exactly one exponential per key: a key below the max adds e^(s - m); a new max rescales l and o
// by e^(m_old - s) and adds 1. Normalisation (o / l) happens once per row, in the attention.V stage.
//
// ROWS query rows run in parallel, and row q starts at step q * ceil(N / ROWS) (skewed), so rows complete at
// a constant rate of at most one per key step: the output port carries one row at a time whatever ROWS is.
// Keys differ by multiples of ceil(N / ROWS) between slots, so block-partitioning K and V into ROWS banks gives
// each slot its own read port. Each row still sees keys 0..N-1 in order, so results do not depend on ROWS.
//
// qkv is [G][N][3 * H * DH] (q | k | v, head-major inside each); the 1/sqrt(DH) scale is folded into q.
// done_step (optional, [G][H][N]) records the step at which each row completed.
#ifndef EDGEVIT_ATTENTION_H
#define EDGEVIT_ATTENTION_H

#include "fixed.h"
#include "fixed_math.h"
#include "stream.h"

namespace edgevit {

template <int DH>
struct attn_row {
    int q;
    i64 o[DH];
    i64 l;
};

template <int G, int N, int H, int DH, int ROWS, class TQ, class TL, class TO>
void attention(const TQ* qkv, TO* y, int* done_step) {
    const int D = H * DH, W = 3 * D, SKEW = (N + ROWS - 1) / ROWS;
    const int FL = frac_bits<TL>::value, FV = frac_bits<TQ>::value, FO = frac_bits<TO>::value;
    typedef ap_fixed<2 * TQ::width + 16, 2 * TQ::iwidth + 16> acc_t;
    for (int g = 0; g < G; ++g) {
        for (int h = 0; h < H; ++h) {
            const TQ* base = qkv + g * N * W;
            stream<attn_row<DH> > rows_out;
            i64 m[ROWS], l[ROWS], o[ROWS][DH];
            const int steps = (N - 1) * SKEW + N;
            for (int t = 0; t < steps; ++t) {
                for (int s = 0; s < ROWS; ++s) {  // unrolled: ROWS query rows in flight
                    int q = -1;
                    for (int c = s; c < N; c += ROWS)  // the row of slot s active at step t, if any
                        if (t >= c * SKEW && t < c * SKEW + N) q = c;
                    if (q < 0) continue;
                    int j = t - q * SKEW;
                    acc_t acc = 0;
                    for (int k = 0; k < DH; ++k)
                        acc += base[q * W + h * DH + k] * base[j * W + D + h * DH + k];
                    i64 sc = raw(TL(acc));
                    const TQ* v = base + j * W + 2 * D + h * DH;
                    if (j == 0) {
                        m[s] = sc;
                        l[s] = 1LL << EXP_FRAC;
                        for (int k = 0; k < DH; ++k) o[s][k] = raw(v[k]) << EXP_FRAC;
                    } else if (sc > m[s]) {
                        i64 e = exp_neg<FL>(m[s] - sc);
                        m[s] = sc;
                        l[s] = ((l[s] * e) >> EXP_FRAC) + (1LL << EXP_FRAC);
                        for (int k = 0; k < DH; ++k) o[s][k] = ((o[s][k] * e) >> EXP_FRAC) + (raw(v[k]) << EXP_FRAC);
                    } else {
                        i64 e = exp_neg<FL>(sc - m[s]);
                        l[s] += e;
                        for (int k = 0; k < DH; ++k) o[s][k] += e * raw(v[k]);
                    }
                    if (j == N - 1) {
                        attn_row<DH> r;
                        r.q = q;
                        r.l = l[s];
                        for (int k = 0; k < DH; ++k) r.o[k] = o[s][k];
                        rows_out.write(r);
                        if (done_step) done_step[(g * H + h) * N + q] = t;
                    }
                }
                // attention.V normalisation stage: one row in, one row out.
                if (!rows_out.empty()) {
                    attn_row<DH> r = rows_out.read();
                    int k2 = 0;
                    i64 rm = recip_norm(r.l, k2);
                    for (int k = 0; k < DH; ++k)
                        y[(g * N + r.q) * D + h * DH + k] =
                            from_raw<TO, FO + 8>(shift_floor(r.o[k] * rm, FV + TABLE_FRAC + k2 - FO - 8));
                }
            }
        }
    }
}

}  // namespace edgevit

#endif
