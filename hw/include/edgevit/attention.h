// Multi-head attention with single-pass (online) softmax fused into Q K^T.
//
// Per query row, keys are visited once in order; a running max m, running sum l and output accumulator o are
// kept, with exactly one exponential per key: a key below the max adds e^(s - m); a new max rescales l and o
// by e^(m_old - s) and adds 1. Normalisation (o / l) happens once per row, as the row is written out.
//
// ROWS query rows run in parallel, and row q starts at step q * ceil(N / ROWS) (skewed), so rows complete at
// a constant rate of at most one per key step: the row store takes one row at a time whatever ROWS is. Each
// row still sees keys 0..N-1 in order, so results do not depend on ROWS.
// Q, K and V of one head are on chip (K and V once per slot, queries by slot, row sums in one buffer), read and
// written in one pipelined pass each, so the key-step loop touches no m_axi port: it is pipelined at II=1
// (one key step per cycle) with the ROWS slots and their DH-wide dot products and rescales unrolled (up to
// DHMAX, lanes beyond the layer's DH masked).
#ifndef EDGEVIT_ATTENTION_H
#define EDGEVIT_ATTENTION_H

#include "descriptor.h"
#include "fixed_math.h"
#include "packed.h"
#include "stream.h"
#include "tripcount_product.h"

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

// Rows complete at most one per key step and the row store takes one per step, so a finished row
// waits at most one step: two slots. A schedule that broke that promise would overflow it (C-sim aborts).
static const int ATTN_ROWS_FIFO_DEPTH = 2;

// qkv [G][N][3 * H * DH] at d.x (q | k | v, head-major inside each; 1/sqrt(DH) folded into q), G = d0,
// N = d1, H = d2, DH = d3; logits requantised to (fl, wl); y [G][N][H * DH] at d.y.
//
// Per head: one pipelined pass reads its Q, K and V (three words a step over the arena port), then the key-step
// loop runs on chip only, then one pass writes the outputs. Each slot has its own copy of K and V, so the
// ROWS slots, which read different keys in the same step, never share a memory port (a dynamic index into a
// shared, partitioned array would make Vitis assume they collide). Row c runs in slot c % ROWS, so queries
// are stored by slot (qbank[c % ROWS][c / ROWS]); finished rows (sums o and l) collect in obuf and lbuf and
// are normalised as they are written out, one word a cycle.
template <class CFG>
void attention_unit(word_port<CFG>& arena, const layer_desc& d) {
    static const int QMAX = (CFG::NMAX + CFG::ROWS - 1) / CFG::ROWS;
    static word_t kbuf[CFG::ROWS][CFG::NMAX][CFG::DHMAX], vbuf[CFG::ROWS][CFG::NMAX][CFG::DHMAX];
    static word_t qbank[CFG::ROWS][QMAX][CFG::DHMAX];
    static i64 obuf[CFG::NMAX][CFG::DHMAX], lbuf[CFG::NMAX];
#pragma HLS ARRAY_PARTITION variable=kbuf complete dim=1
#pragma HLS ARRAY_PARTITION variable=kbuf complete dim=3
#pragma HLS ARRAY_PARTITION variable=vbuf complete dim=1
#pragma HLS ARRAY_PARTITION variable=vbuf complete dim=3
#pragma HLS ARRAY_PARTITION variable=qbank complete dim=1
#pragma HLS ARRAY_PARTITION variable=qbank complete dim=3
#pragma HLS ARRAY_PARTITION variable=obuf complete dim=2
    word_t qbuf[CFG::ROWS][CFG::DHMAX];
    i64 m[CFG::ROWS], l[CFG::ROWS], o[CFG::ROWS][CFG::DHMAX];
#pragma HLS ARRAY_PARTITION variable=qbuf complete dim=0
#pragma HLS ARRAY_PARTITION variable=m complete
#pragma HLS ARRAY_PARTITION variable=l complete
#pragma HLS ARRAY_PARTITION variable=o complete dim=0
    typedef tripcount_product<typename CFG::attn_tokens, typename CFG::attn_head_dim> head_words;
    stream<attn_row<CFG::DHMAX>, ATTN_ROWS_FIFO_DEPTH> rows_out;  // empty again at the end of every head
    const int G = d.d0, N = d.d1, H = d.d2, DH = d.d3, D = H * DH, W = 3 * D;
    const int SKEW = (N + CFG::ROWS - 1) / CFG::ROWS;
    const int FQ = d.fx, FL = d.fl;
    for (int g = 0; g < G; ++g) {
        EDGEVIT_TRIPCOUNT(CFG::attn_groups)
        for (int h = 0; h < H; ++h) {
            EDGEVIT_TRIPCOUNT(CFG::attn_heads)
            const int base = d.x + g * N * W;
            int j = 0, k = 0, bank = 0, lap = 0;
            for (int i = 0; i < N * DH; ++i) {
                EDGEVIT_TRIPCOUNT(head_words)
#pragma HLS PIPELINE II=3
                const int at = base + j * W + h * DH + k;
                const word_t qv = arena.get(at), kv = arena.get(at + D), vv = arena.get(at + 2 * D);
                for (int s = 0; s < CFG::ROWS; ++s) {
#pragma HLS UNROLL
                    kbuf[s][j][k] = kv;
                    vbuf[s][j][k] = vv;
                }
                qbank[bank][lap][k] = qv;
                if (++k == DH) {
                    k = 0;
                    ++j;
                    if (++bank == CFG::ROWS) {
                        bank = 0;
                        ++lap;
                    }
                }
            }
            // Row c starts at step c * SKEW in slot c % ROWS; the slot's previous row (c - ROWS) ended before,
            // since ROWS * SKEW >= N. Counters replace the division: next row, steps into SKEW, its slot, and
            // the row's place in its slot's query bank.
            int row[CFG::ROWS], qrow[CFG::ROWS];  // the query row each slot works on (-1: idle), its bank row
#pragma HLS ARRAY_PARTITION variable=row complete
#pragma HLS ARRAY_PARTITION variable=qrow complete
            for (int s = 0; s < CFG::ROWS; ++s) {
#pragma HLS UNROLL
                row[s] = -1;
                qrow[s] = 0;
            }
            int next = 0, phase = 0, slot = 0, round = 0;
            const int steps = (N - 1) * SKEW + N;
            for (int t = 0; t < steps; ++t) {
                EDGEVIT_TRIPCOUNT(CFG::attn_steps)
#pragma HLS PIPELINE II=1
                if (phase == 0 && next < N) {
                    row[slot] = next++;
                    qrow[slot] = round;
                    if (++slot == CFG::ROWS) {
                        slot = 0;
                        ++round;
                    }
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
                                qbuf[s][k] = qbank[s][qrow[s]][k];
                            }
                        i64 acc = 0;
                        for (int k = 0; k < CFG::DHMAX; ++k) {
                            #pragma HLS UNROLL
                            if (k < DH) acc += (i64)qbuf[s][k] * (i64)kbuf[s][j][k];
                        }
                        const i64 sc = requant(acc, 2 * FQ - FL, d.wl);
                        if (j == 0) {
                            m[s] = sc;
                            l[s] = 1LL << EXP_FRAC;
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) o[s][k] = (i64)vbuf[s][j][k] << EXP_FRAC;
                            }
                        } else if (sc > m[s]) {
                            i64 e = exp_neg(m[s] - sc, FL);
                            m[s] = sc;
                            l[s] = ((l[s] * e) >> EXP_FRAC) + (1LL << EXP_FRAC);
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) o[s][k] = ((o[s][k] * e) >> EXP_FRAC) + ((i64)vbuf[s][j][k] << EXP_FRAC);
                            }
                        } else {
                            i64 e = exp_neg(sc - m[s], FL);
                            l[s] += e;
                            for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                                if (k < DH) o[s][k] += e * (i64)vbuf[s][j][k];
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
                // One finished row a step into the on-chip row store; normalised on the way out.
                if (!rows_out.empty()) {
                    attn_row<CFG::DHMAX> r = rows_out.read();
                    lbuf[r.q] = r.l;
                    for (int k = 0; k < CFG::DHMAX; ++k) {
#pragma HLS UNROLL
                        obuf[r.q][k] = r.o[k];
                    }
                }
            }
            // attention.V normalisation (o / l) one word a cycle, so one wide multiplier serves every lane.
            int oj = 0, ok = 0, k2 = 0;
            i64 rm = 0;
            for (int i = 0; i < N * DH; ++i) {
                EDGEVIT_TRIPCOUNT(head_words)
#pragma HLS PIPELINE II=1
                if (ok == 0) rm = recip_norm(lbuf[oj], k2);
                arena.put(d.y + (g * N + oj) * D + h * DH + ok,
                          requant(shift_floor(obuf[oj][ok] * rm, FQ + TABLE_FRAC + k2 - d.fo - 8), 8, d.wo));
                if (++ok == DH) {
                    ok = 0;
                    ++oj;
                }
            }
        }
    }
#ifndef __SYNTHESIS__
    attention_trace_pos() += G * H * N;
#endif
}

// MobileViTv2's separable self-attention (timm LinearSelfAttention): qkv [G][N][1 + 2D] at d.x (fx), rows of a
// score, D keys and D values; y [G][N][D] at d.y; G = d0, N = d1 <= SNMAX, D = d2 <= SDMAX. Per group:
//   e_n = exp(q_n - max q), c = sum_n e_n k_n / sum_n e_n (CTX_FRAC more fractional bits than x), y_n = ReLU(v_n) c.
// The scores and their exponentials wait on chip (N words), the context too (D); keys and values are read once, a
// word a cycle, in one pipelined loop over the group's N x D words each (golden.separable_attention).
static const int CTX_FRAC = 8;

template <class CFG>
void separable_attention(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<typename CFG::sep_tokens, typename CFG::sep_dim> words;
    static i64 e[CFG::SNMAX];
    static i64 ctx[CFG::SDMAX];
    const int G = d.d0, N = d.d1, D = d.d2, W = 1 + 2 * D;
    for (int g = 0; g < G; ++g) {
        EDGEVIT_TRIPCOUNT(CFG::sep_groups)
        const int base = d.x + g * N * W, out = d.y + g * N * D;
        i64 m = 0, lsum = 0;
        for (int n = 0; n < N; ++n) {
            EDGEVIT_TRIPCOUNT(CFG::sep_tokens)
#pragma HLS PIPELINE II=1
            const i64 q = arena.get(base + n * W);
            e[n] = q;
            if (n == 0 || q > m) m = q;
        }
        for (int n = 0; n < N; ++n) {
            EDGEVIT_TRIPCOUNT(CFG::sep_tokens)
#pragma HLS PIPELINE II=1
            e[n] = exp_neg(e[n] - m, d.fx);
            lsum += e[n];
        }
        int n = 0, c = 0;
        for (int i = 0; i < N * D; ++i) {
            EDGEVIT_TRIPCOUNT(words)
#pragma HLS PIPELINE II=1
            ctx[c] = (n == 0 ? 0 : ctx[c]) + e[n] * (i64)arena.get(base + n * W + 1 + c);
            if (++c == D) {
                c = 0;
                ++n;
            }
        }
        int k2 = 0;
        const i64 rm = recip_norm(lsum, k2);
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::sep_dim)
#pragma HLS PIPELINE II=1
            ctx[k] = (ctx[k] * rm) >> (TABLE_FRAC + k2 - CTX_FRAC);
        }
        n = 0, c = 0;
        for (int i = 0; i < N * D; ++i) {
            EDGEVIT_TRIPCOUNT(words)
#pragma HLS PIPELINE II=1
            const i64 v = arena.get(base + n * W + 1 + D + c);
            arena.put(out + n * D + c, word_t(requant((v > 0 ? v : 0) * ctx[c], 2 * d.fx + CTX_FRAC - d.fo, d.wo)));
            if (++c == D) {
                c = 0;
                ++n;
            }
        }
    }
}

}  // namespace edgevit

#endif
