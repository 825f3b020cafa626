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
// K and V of one head (NMAX x DHMAX words each) are on chip; queries are read as their rows start. The step
// loop is pipelined at II=1 (the target: one key step per cycle): the ROWS slots and their DH-wide dot
// products and rescales are unrolled (up to DHMAX, lanes beyond the layer's DH masked). A step that starts a
// row reads its DH query words, and one that finishes a row writes DH outputs, over the m_axi port: those
// steps take longer unless Vitis widens the accesses.
#ifndef EDGEVIT_ATTENTION_H
#define EDGEVIT_ATTENTION_H

#include "descriptor.h"
#include "fixed_math.h"
#include "stream.h"

namespace edgevit {

#ifndef __SYNTHESIS__
// C-simulation only: where the unit records the step at which each row completes (null: nowhere), and the
// next free entry. The testbench reads it to check the skewed schedule.
inline int*& attention_trace() { static int* p = 0; return p; }
inline int& attention_trace_pos() { static int n = 0; return n; }
#endif

template <int DHMAX>
struct attn_row {
    int q;
    i64 o[DHMAX];
    i64 l;
};

// Rows complete at most one per key step and the normalisation stage takes one per step, so a finished row
// waits at most one step: two slots. A schedule that broke that promise would overflow it (C-sim aborts).
static const int ATTN_ROWS_FIFO_DEPTH = 2;

// qkv [G][N][3 * H * DH] at d.x (q | k | v, head-major inside each; 1/sqrt(DH) folded into q), G = d0,
// N = d1, H = d2, DH = d3; logits requantised to (fl, wl); y [G][N][H * DH] at d.y.
template <class CFG>
void attention_unit(word_t* arena, const layer_desc& d) {
    static word_t kbuf[CFG::NMAX][CFG::DHMAX], vbuf[CFG::NMAX][CFG::DHMAX];
#pragma HLS ARRAY_PARTITION variable=kbuf block factor=CFG::ROWS dim=1
#pragma HLS ARRAY_PARTITION variable=kbuf complete dim=2
#pragma HLS ARRAY_PARTITION variable=vbuf block factor=CFG::ROWS dim=1
#pragma HLS ARRAY_PARTITION variable=vbuf complete dim=2
    word_t qbuf[CFG::ROWS][CFG::DHMAX];
    i64 m[CFG::ROWS], l[CFG::ROWS], o[CFG::ROWS][CFG::DHMAX];
#pragma HLS ARRAY_PARTITION variable=qbuf complete dim=0
#pragma HLS ARRAY_PARTITION variable=m complete
#pragma HLS ARRAY_PARTITION variable=l complete
#pragma HLS ARRAY_PARTITION variable=o complete dim=0
    stream<attn_row<CFG::DHMAX>, ATTN_ROWS_FIFO_DEPTH> rows_out;  // empty again at the end of every head
    const int G = d.d0, N = d.d1, H = d.d2, DH = d.d3, D = H * DH, W = 3 * D;
    const int SKEW = (N + CFG::ROWS - 1) / CFG::ROWS;
    const int FQ = d.fx, FL = d.fl;
    for (int g = 0; g < G; ++g) {
        EDGEVIT_TRIPCOUNT(CFG::attn_groups)
        for (int h = 0; h < H; ++h) {
            EDGEVIT_TRIPCOUNT(CFG::attn_heads)
            const int base = d.x + g * N * W;
            for (int j = 0; j < N; ++j) {
                EDGEVIT_TRIPCOUNT(CFG::attn_tokens)
                for (int k = 0; k < DH; ++k) {
                    EDGEVIT_TRIPCOUNT(CFG::attn_head_dim)
#pragma HLS PIPELINE II=1
                    kbuf[j][k] = arena[base + j * W + D + h * DH + k];
                    vbuf[j][k] = arena[base + j * W + 2 * D + h * DH + k];
                }
            }
            // Row c starts at step c * SKEW in slot c % ROWS; the slot's previous row (c - ROWS) ended before,
            // since ROWS * SKEW >= N. Counters replace the division: next row, steps into SKEW, its slot.
            int row[CFG::ROWS];  // the query row each slot works on, -1: idle
#pragma HLS ARRAY_PARTITION variable=row complete
            for (int s = 0; s < CFG::ROWS; ++s) {
#pragma HLS UNROLL
                row[s] = -1;
            }
            int next = 0, phase = 0, slot = 0;
            const int steps = (N - 1) * SKEW + N;
            for (int t = 0; t < steps; ++t) {
                EDGEVIT_TRIPCOUNT(CFG::attn_steps)
#pragma HLS PIPELINE II=1
                if (phase == 0 && next < N) {
                    row[slot] = next++;
                    slot = slot + 1 == CFG::ROWS ? 0 : slot + 1;
                }
                phase = phase + 1 == SKEW ? 0 : phase + 1;
                for (int s = 0; s < CFG::ROWS; ++s) {  // ROWS query rows in flight
#pragma HLS UNROLL
                    const int q = row[s];
                    if (q >= 0) {
                        const int j = t - q * SKEW;
                        if (j == 0)
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) qbuf[s][k] = arena[base + q * W + h * DH + k];
                            }
                        i64 acc = 0;
                        for (int k = 0; k < CFG::DHMAX; ++k) {
                            #pragma HLS UNROLL
                            if (k < DH) acc += (i64)qbuf[s][k] * (i64)kbuf[j][k];
                        }
                        const i64 sc = requant(acc, 2 * FQ - FL, d.wl);
                        if (j == 0) {
                            m[s] = sc;
                            l[s] = 1LL << EXP_FRAC;
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) o[s][k] = (i64)vbuf[j][k] << EXP_FRAC;
                            }
                        } else if (sc > m[s]) {
                            i64 e = exp_neg(m[s] - sc, FL);
                            m[s] = sc;
                            l[s] = ((l[s] * e) >> EXP_FRAC) + (1LL << EXP_FRAC);
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) o[s][k] = ((o[s][k] * e) >> EXP_FRAC) + ((i64)vbuf[j][k] << EXP_FRAC);
                            }
                        } else {
                            i64 e = exp_neg(sc - m[s], FL);
                            l[s] += e;
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) o[s][k] += e * (i64)vbuf[j][k];
                            }
                        }
                        if (j == N - 1) {
                            attn_row<CFG::DHMAX> r;
                            r.q = q;
                            r.l = l[s];
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) r.o[k] = o[s][k];
                            }
                            rows_out.write(r);
                            row[s] = -1;
#ifndef __SYNTHESIS__
                            if (attention_trace()) attention_trace()[attention_trace_pos() + (g * H + h) * N + q] = t;
#endif
                        }
                    }
                }
                // attention.V normalisation stage: one row in, one row out.
                if (!rows_out.empty()) {
                    attn_row<CFG::DHMAX> r = rows_out.read();
                    int k2 = 0;
                    i64 rm = recip_norm(r.l, k2);
                    for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                        if (k < DH)
                            arena[d.y + (g * N + r.q) * D + h * DH + k] =
                                requant(shift_floor(r.o[k] * rm, FQ + TABLE_FRAC + k2 - d.fo - 8), 8, d.wo);
                    }
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
