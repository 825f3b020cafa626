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
// Per head: one pipelined pass reads its Q, K and V (a beat a cycle: per token three runs of DH words, each the
// beats that hold it), then the key-step loop runs on chip only, then one pass writes the outputs (LNL words a
// cycle when a token's outputs are whole beats). Each slot has its own copy of K and V, so the
// ROWS slots, which read different keys in the same step, never share a memory port (a dynamic index into a
// shared, partitioned array would make Vitis assume they collide). Row c runs in slot c % ROWS, so queries
// are stored by slot (qbank[c % ROWS][c / ROWS]); finished rows (sums o and l) collect in obuf and lbuf and
// are normalised as they are written out.
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
    typedef typename CFG::beat_t beat_t;
    typedef tripcount_product<typename CFG::attn_tokens, typename CFG::attn_head_dim> head_words;
    typedef tripcount_product<typename CFG::attn_tokens, typename CFG::attn_run_beats> token_beats;
    typedef tripcount_product<token_beats, tripcount_const<3> > read_beats;
    stream<attn_row<CFG::DHMAX>, ATTN_ROWS_FIFO_DEPTH> rows_out;  // empty again at the end of every head
    const int G = d.d0, N = d.d1, H = d.d2, DH = d.d3, D = H * DH, W = 3 * D;
    const int SKEW = (N + CFG::ROWS - 1) / CFG::ROWS;
    const int FQ = d.fx, FL = d.fl;
    const int RB = row_pass_beats<CFG>(d.x % CFG::WPB == 0, DH);   // beats of a run of DH words
#ifndef __SYNTHESIS__
    unit_loop_begin();
#endif
    for (int g = 0; g < G; ++g) {
        EDGEVIT_TRIPCOUNT(CFG::attn_groups)
        for (int h = 0; h < H; ++h) {
            EDGEVIT_TRIPCOUNT(CFG::attn_heads)
            // Token j's q, k and v of this head: three runs of DH words (at h DH, D + h DH and 2 D + h DH of its
            // row), each RB beats, a beat a cycle; a beat's lanes land in distinct banks (k) of the run's buffer.
            int j = 0, part = 0, rb = 0, bank = 0, lap = 0;
#ifndef __SYNTHESIS__
            unit_loop_note(N * 3 * RB);
#endif
            for (int i = 0; i < N * 3 * RB; ++i) {
                EDGEVIT_TRIPCOUNT(read_beats)
#pragma HLS PIPELINE II=1
                const int start = d.x + (g * N + j) * W + part * D + h * DH, sh = start % CFG::WPB;
                const int b = start / CFG::WPB + rb;
                const beat_t v = b * CFG::WPB < start + DH ? arena.beat(b) : beat_t(0);
                for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                    const int k = rb * CFG::WPB + l - sh;
                    if (k >= 0 && k < DH) {
                        const word_t w = lane_of(v, l);
                        if (part == 0) qbank[bank][lap][k] = w;
                        for (int s = 0; s < CFG::ROWS; ++s) {
#pragma HLS UNROLL
                            if (part == 1) kbuf[s][j][k] = w;
                            if (part == 2) vbuf[s][j][k] = w;
                        }
                    }
                }
                if (++rb == RB) {
                    rb = 0;
                    if (++part == 3) {
                        part = 0;
                        ++j;
                        if (++bank == CFG::ROWS) {
                            bank = 0;
                            ++lap;
                        }
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
#ifndef __SYNTHESIS__
            unit_loop_note(steps);
#endif
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
            // attention.V normalisation (o / l), one reciprocal a row: LNL words a cycle, each beat written whole
            // once filled, when a token's DH outputs are whole beats (y on a beat); otherwise a word a cycle.
            const bool lanes = DH % CFG::WPB == 0 && d.y % CFG::WPB == 0;
            const int step = lanes ? CFG::LNL : 1;
            int oj = 0, ok = 0, k2 = 0;
            i64 rm = 0;
            beat_writer<CFG> out;
#ifndef __SYNTHESIS__
            unit_loop_note(N * DH / step);
#endif
            for (int i = 0; i < N * DH / step; ++i) {
                EDGEVIT_TRIPCOUNT(CFG::attn_out_steps)
#pragma HLS PIPELINE II=1
                if (ok == 0) rm = recip_norm(lbuf[oj], k2);
                const int at = d.y + (g * N + oj) * D + h * DH + ok;
                if (lanes) out.to(arena, at / CFG::WPB);
                for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                    if (q < step) {
                        const word_t w = requant(shift_floor(obuf[oj][ok + q] * rm, FQ + TABLE_FRAC + k2 - d.fo - 8), 8,
                                                 d.wo);
                        if (lanes)
                            out.set(at % CFG::WPB + q, w);
                        else
                            arena.put(at, w);
                    }
                }
                ok += step;
                if (ok == DH) {
                    ok = 0;
                    ++oj;
                }
            }
            out.flush(arena);
        }
    }
#ifndef __SYNTHESIS__
    attention_trace_pos() += G * H * N;
    unit_loop_end();
#endif
}

// MobileViTv2's separable self-attention (timm LinearSelfAttention), after its 1x1 projection split in two linear
// layers: qk [G][N][1 + D] at d.x (fx), rows of a score and D keys; v [G][N][D] at d.x2 (fx2), the values with
// their ReLU applied by the linear unit; y [G][N][D] at d.y; G = d0, N = d1 <= SNMAX, D = d2 <= SDMAX. Per group:
//   e_n = exp(q_n - max q), c = sum_n e_n k_n / sum_n e_n (CTX_FRAC more fractional bits than qk), y_n = v_n c.
// The scores are read a word a cycle (one per row) into an on-chip copy and turned into exponentials there. The
// keys and the values are then read LNL words a cycle over the port beats that hold them (as the layernorm), each
// once: a key of row n at column j adds e_n k to acc[j], or to acc[j + D + 1] when its LNL-word step began in the
// row before (so that the LNL lanes of a step always update distinct banks of acc); the context is
// acc[j] + acc[j + D + 1]. It is kept twice (ctx[j] = ctx[j + D]), so that the LNL lanes of an output step read
// consecutive entries, distinct banks. v and y start on the same lane of a beat (arena tensors start on 32-word
// boundaries, and the groups of both are N D words apart), so output beat b is input beat b of v times the
// context (golden.separable_attention). Needs D >= LNL.
static const int CTX_FRAC = 8;

template <class CFG>
void separable_attention(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<tripcount_beats<tripcount_product<typename CFG::sep_tokens, typename CFG::sep_dim>,
                                              CFG::WPB>,
                              tripcount_const<CFG::WPB / CFG::LNL> > steps;
    typedef typename CFG::beat_t beat_t;
    static i64 e[CFG::SNMAX];
    static i64 acc[2 * CFG::SDMAX + CFG::WPB];   // zeros between groups
    static i64 ctx[2 * CFG::SDMAX];
#pragma HLS ARRAY_PARTITION variable=acc cyclic factor=CFG::LNL
#pragma HLS ARRAY_PARTITION variable=ctx cyclic factor=CFG::LNL
    const int G = d.d0, N = d.d1, D = d.d2, W = 1 + D;
    for (int g = 0; g < G; ++g) {
        EDGEVIT_TRIPCOUNT(CFG::sep_groups)
        const int base = d.x + g * N * W;
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
        // the keys: the beats holding the group's N rows of W words; the step's lane 0 holds word p of the group,
        // column col of row n (p = col < 0 before the group's first word)
        const int fi = base / CFG::WPB, bi = (base + N * W - 1) / CFG::WPB - fi + 1;
        int p = fi * CFG::WPB - base, n = 0, col = p, sub = 0, b = 0;
        beat_t v = 0;
        for (int i = 0; i < bi * (CFG::WPB / CFG::LNL); ++i) {
            EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
            if (sub == 0) v = arena.beat(fi + b);
            const i64 e0 = e[n], e1 = n + 1 < N ? e[n + 1] : 0;
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = col + q;   // column, past W: the next row's
                if (p + q >= 0 && p + q < N * W && c != 0 && c != W)
                    acc[c - 1] += (c < W ? e0 : e1) * (i64)lane_of(v, l);
            }
            p += CFG::LNL;
            col += CFG::LNL;
            if (col >= W) {
                col -= W;
                ++n;
            }
            if (++sub == CFG::WPB / CFG::LNL) {
                sub = 0;
                ++b;
            }
        }
        int k2 = 0;
        const i64 rm = recip_norm(lsum, k2);
        for (int j = 0; j < D; ++j) {   // two reads and writes of acc an iteration: II=2
            EDGEVIT_TRIPCOUNT(CFG::sep_dim)
#pragma HLS PIPELINE II=2
            const i64 c = ((acc[j] + acc[j + W]) * rm) >> (TABLE_FRAC + k2 - CTX_FRAC);
            acc[j] = 0;   // acc is all zeros again for the next group (and the next run)
            acc[j + W] = 0;
            ctx[j] = c;
            ctx[j + D] = c;
        }
        // the outputs: beat b of y from beat b of v; the step's lane 0 holds word p of the group, feature col
        const int vs = d.x2 + g * N * D, ys = d.y + g * N * D;
        const int fv = vs / CFG::WPB, fy = ys / CFG::WPB, bo = (vs + N * D - 1) / CFG::WPB - fv + 1;
        p = fv * CFG::WPB - vs, col = p, sub = 0, b = 0;
        beat_t o = 0;
        ap_uint<CFG::WPB> lanes = 0;
        for (int i = 0; i < bo * (CFG::WPB / CFG::LNL); ++i) {
            EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
            if (sub == 0) v = arena.beat(fv + b);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q;
                if (p + q >= 0 && p + q < N * D) {
                    set_lane(o, l, word_t(requant((i64)lane_of(v, l) * ctx[col + q],
                                                  d.fx2 + d.fx + CTX_FRAC - d.fo, d.wo)));
                    lanes[l] = 1;
                }
            }
            p += CFG::LNL;
            col += CFG::LNL;
            if (col >= D) col -= D;
            if (++sub == CFG::WPB / CFG::LNL) {
                arena.put_beat(fy + b, o, lanes);
                lanes = 0;
                sub = 0;
                ++b;
            }
        }
    }
}

}  // namespace edgevit

#endif
