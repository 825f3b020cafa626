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
// K and V of one head (NMAX x DHMAX words each) are on chip; queries are read as their rows start.
#ifndef EDGEVIT_ATTENTION_H
#define EDGEVIT_ATTENTION_H

#include "descriptor.h"
#include "fixed_math.h"
#include "stream.h"

namespace edgevit {

// C-simulation only: where the unit records the step at which each row completes (null: nowhere), and the
// next free entry. The testbench reads it to check the skewed schedule.
inline int*& attention_trace() { static int* p = 0; return p; }
inline int& attention_trace_pos() { static int n = 0; return n; }

template <int DHMAX>
struct attn_row {
    int q;
    i64 o[DHMAX];
    i64 l;
};

// qkv [G][N][3 * H * DH] at d.x (q | k | v, head-major inside each; 1/sqrt(DH) folded into q), G = d0,
// N = d1, H = d2, DH = d3; logits requantised to (fl, wl); y [G][N][H * DH] at d.y.
template <int ROWS, int NMAX, int DHMAX>
void attention_unit(word_t* arena, const layer_desc& d) {
    static word_t kbuf[NMAX][DHMAX], vbuf[NMAX][DHMAX];
#pragma HLS ARRAY_PARTITION variable=kbuf block factor=ROWS dim=1
#pragma HLS ARRAY_PARTITION variable=vbuf block factor=ROWS dim=1
    word_t qbuf[ROWS][DHMAX];
    i64 m[ROWS], l[ROWS], o[ROWS][DHMAX];
    const int G = d.d0, N = d.d1, H = d.d2, DH = d.d3, D = H * DH, W = 3 * D, SKEW = (N + ROWS - 1) / ROWS;
    const int FQ = d.fx, FL = d.fl;
    for (int g = 0; g < G; ++g) {
        for (int h = 0; h < H; ++h) {
            const int base = d.x + g * N * W;
            for (int j = 0; j < N; ++j)
                for (int k = 0; k < DH; ++k) {
                    kbuf[j][k] = arena[base + j * W + D + h * DH + k];
                    vbuf[j][k] = arena[base + j * W + 2 * D + h * DH + k];
                }
            stream<attn_row<DHMAX> > rows_out;
            const int steps = (N - 1) * SKEW + N;
            for (int t = 0; t < steps; ++t) {
                for (int s = 0; s < ROWS; ++s) {  // unrolled: ROWS query rows in flight
                    int q = -1;
                    for (int c = s; c < N; c += ROWS)  // the row of slot s active at step t, if any
                        if (t >= c * SKEW && t < c * SKEW + N) q = c;
                    if (q < 0) continue;
                    const int j = t - q * SKEW;
                    if (j == 0)
                        for (int k = 0; k < DH; ++k) qbuf[s][k] = arena[base + q * W + h * DH + k];
                    i64 acc = 0;
                    for (int k = 0; k < DH; ++k) acc += (i64)qbuf[s][k] * (i64)kbuf[j][k];
                    const i64 sc = requant(acc, 2 * FQ - FL, d.wl);
                    if (j == 0) {
                        m[s] = sc;
                        l[s] = 1LL << EXP_FRAC;
                        for (int k = 0; k < DH; ++k) o[s][k] = (i64)vbuf[j][k] << EXP_FRAC;
                    } else if (sc > m[s]) {
                        i64 e = exp_neg(m[s] - sc, FL);
                        m[s] = sc;
                        l[s] = ((l[s] * e) >> EXP_FRAC) + (1LL << EXP_FRAC);
                        for (int k = 0; k < DH; ++k) o[s][k] = ((o[s][k] * e) >> EXP_FRAC) + ((i64)vbuf[j][k] << EXP_FRAC);
                    } else {
                        i64 e = exp_neg(sc - m[s], FL);
                        l[s] += e;
                        for (int k = 0; k < DH; ++k) o[s][k] += e * (i64)vbuf[j][k];
                    }
                    if (j == N - 1) {
                        attn_row<DHMAX> r;
                        r.q = q;
                        r.l = l[s];
                        for (int k = 0; k < DH; ++k) r.o[k] = o[s][k];
                        rows_out.write(r);
#ifndef __SYNTHESIS__
                        if (attention_trace()) attention_trace()[attention_trace_pos() + (g * H + h) * N + q] = t;
#endif
                    }
                }
                // attention.V normalisation stage: one row in, one row out.
                if (!rows_out.empty()) {
                    attn_row<DHMAX> r = rows_out.read();
                    int k2 = 0;
                    i64 rm = recip_norm(r.l, k2);
                    for (int k = 0; k < DH; ++k)
                        arena[d.y + (g * N + r.q) * D + h * DH + k] =
                            requant(shift_floor(r.o[k] * rm, FQ + TABLE_FRAC + k2 - d.fo - 8), 8, d.wo);
                }
            }
        }
    }
#ifndef __SYNTHESIS__
    attention_trace_pos() += G * H * N;
#endif
}

}  // namespace edgevit

#endif
