// Mixture-of-experts layers (M3ViT-style, as Edge-MoE runs them) on the shared linear unit.
//
// An MoE layer is four descriptors: the gate logits (an ordinary OP_LINEAR on the linear unit), OP_MOE_ROUTE
// (top-k and softmax per patch), OP_MOE_EXPERTS (patch reordering, the experts, weighted scatter) and OP_ADD
// (the residual).
//
// moe_route: one pass over a patch's E logits keeps the k largest in k registers (a later expert displaces an
// earlier one only if strictly larger, so ties go to the lower id); the softmax over them needs no second pass
// because the running maximum is the first register: one exp per kept logit (exp_neg) and one reciprocal.
//
// moe_experts: the route table is read once into per-expert queues (patch id, gate weight) in patch order -
// the patch reordering. Each active expert then runs once on all its queued patches: they are gathered, run
// through fc1 (+ activation) and fc2 on the shared linear unit, and scattered back into exact 64-bit
// accumulators scaled by their gate weights. The linear unit reads the expert's weights (fc1, fc2 and their
// biases, one block in DDR) straight from the parameter buffer, weight tiles outer, so every word of the
// block is read once per expert run - once per image with reordering - and the unit keeps the one m_axi
// weight path it has for every other layer (no on-chip copy of the block is handed to it as `params`). With
// d5 = 0 the unit instead walks patches in order and runs each (patch, expert) pair: the same result, one
// block read per pair (the baseline the reordering is measured against).
#ifndef EDGEVIT_MOE_H
#define EDGEVIT_MOE_H

#include "descriptor.h"
#include "fixed_math.h"
#include "linear.h"
#include "packed.h"

namespace edgevit {

#ifndef __SYNTHESIS__
// C-simulation only: per (MoE layer, expert), the words of expert weights read from DDR (null: not recorded),
// and the first slot of the next MoE layer. The testbench dumps them to check the reordering's traffic.
inline long*& moe_weight_reads() { static long* p = 0; return p; }
inline int& moe_weight_reads_pos() { static int n = 0; return n; }
#endif

// Words of one expert's parameter block: fc1 [H][D], fc2 [D][H], then the 64-bit biases b1 [H], b2 [D].
inline int expert_words(int D, int H) { return 2 * H * D + 4 * (H + D); }

// logits [N][E] at d.x (fx fractional bits) -> route [N][K][2] at d.y: (expert id, gate weight with fo
// fractional bits, wo wide). N, E, K = d0, d1, d2; K <= E <= EMAX.
template <class CFG>
void moe_route(word_port<CFG>& arena, const layer_desc& d) {
    const int N = d.d0, E = d.d1, K = d.d2;
    for (int n = 0; n < N; ++n) {
        EDGEVIT_TRIPCOUNT(CFG::route_patches)
        i64 val[CFG::EMAX];
        int id[CFG::EMAX], kept = 0;
        for (int e = 0; e < E; ++e) {
            EDGEVIT_TRIPCOUNT(CFG::route_experts)
            const i64 v = arena.get(d.x + n * E + e).to_int();
            int pos = kept;
            while (pos > 0 && v > val[pos - 1]) {
                EDGEVIT_TRIPCOUNT(CFG::route_kept)
                --pos;
            }
            if (pos >= K) continue;
            for (int j = (kept < K ? kept : K - 1); j > pos; --j) {
                EDGEVIT_TRIPCOUNT(CFG::route_kept)
                val[j] = val[j - 1];
                id[j] = id[j - 1];
            }
            val[pos] = v;
            id[pos] = e;
            if (kept < K) ++kept;
        }
        i64 ex[CFG::EMAX], sum = 0;
        for (int j = 0; j < K; ++j) {
            EDGEVIT_TRIPCOUNT(CFG::route_kept)
            ex[j] = exp_neg(val[j] - val[0], d.fx);  // EXP_FRAC bits; the first is 1.0
            sum += ex[j];
        }
        int k2 = 0;
        const i64 rm = recip_norm(sum, k2);
        for (int j = 0; j < K; ++j) {
            EDGEVIT_TRIPCOUNT(CFG::route_kept)
            arena.put(d.y + (n * K + j) * 2, id[j]);
            arena.put(d.y + (n * K + j) * 2 + 1, requant(ex[j] * rm, TABLE_FRAC + k2 - d.fo, d.wo));
        }
    }
}

// tokens x [N][D] at d.x, route [N][K][2] at d.x2 (gate weights with fx2 fractional bits), expert blocks at
// d.w (expert_words each) -> y [N][D] at d.y = sum over a patch's experts of weight * fc2(act(fc1(x))).
// N, D, H, E, K, reorder = d0..d5; fx, fw: tokens and expert weights; fl, wl: the hidden activations;
// fo, wo: the expert outputs and y. Scratch in the arena right after y: gathered tokens [N][D], hidden
// [N][H], expert outputs [N][D].
template <class CFG>
void moe_experts(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static i64 acc[CFG::MNMAX][CFG::MDMAX];
    static int qtok[CFG::EMAX][CFG::MNMAX];
    static i64 qw[CFG::EMAX][CFG::MNMAX];
    int qn[CFG::EMAX];
    const int N = d.d0, D = d.d1, H = d.d2, E = d.d3, K = d.d4, S = expert_words(D, H);
    const int GATHER = d.y + N * D, HIDDEN = GATHER + N * D, OUT = HIDDEN + N * H;
    for (int n = 0; n < N; ++n) {
        EDGEVIT_TRIPCOUNT(CFG::moe_patches)
        for (int c = 0; c < D; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::moe_dim)
#pragma HLS PIPELINE II=1
            acc[n][c] = 0;
        }
    }
    for (int e = 0; e < E; ++e) {
        EDGEVIT_TRIPCOUNT(CFG::moe_expert_count)
        qn[e] = 0;
    }
    for (int n = 0; n < N; ++n) {
        EDGEVIT_TRIPCOUNT(CFG::moe_patches)
        for (int j = 0; j < K; ++j) {
            EDGEVIT_TRIPCOUNT(CFG::moe_kept)
            const int e = arena.get(d.x2 + (n * K + j) * 2).to_int();
            qtok[e][qn[e]] = n;
            qw[e][qn[e]++] = arena.get(d.x2 + (n * K + j) * 2 + 1).to_int();
        }
    }
    // fc1 and fc2 as linear descriptors over the gathered tokens; weights and biases in the expert's block.
    layer_desc fc1 = d, fc2 = d;
    fc1.op = fc2.op = OP_LINEAR;
    fc1.x2 = fc2.x2 = -1;
    fc1.x = GATHER, fc1.y = HIDDEN, fc1.d1 = D, fc1.d2 = H, fc1.d3 = 1;
    fc1.fo = d.fl, fc1.wo = d.wl;
    fc2.x = HIDDEN, fc2.y = OUT, fc2.d1 = H, fc2.d2 = D, fc2.d3 = 1;
    fc2.fx = d.fl, fc2.act = ACT_NONE;
    // The work list: (expert, first queue entry, count) - whole queues when reordering, else single patches.
    int work_e[CFG::MNMAX * CFG::EMAX], work_q[CFG::MNMAX * CFG::EMAX], work_n[CFG::MNMAX * CFG::EMAX], works = 0;
    if (d.d5) {
        for (int e = 0; e < E; ++e) {
            EDGEVIT_TRIPCOUNT(CFG::moe_expert_count)
            if (qn[e]) work_e[works] = e, work_q[works] = 0, work_n[works++] = qn[e];
        }
    } else {
        int next[CFG::EMAX];
        for (int e = 0; e < E; ++e) {
            EDGEVIT_TRIPCOUNT(CFG::moe_expert_count)
            next[e] = 0;
        }
        for (int n = 0; n < N; ++n) {
            EDGEVIT_TRIPCOUNT(CFG::moe_patches)
            for (int j = 0; j < K; ++j) {
                EDGEVIT_TRIPCOUNT(CFG::moe_kept)
                const int e = arena.get(d.x2 + (n * K + j) * 2).to_int();
                work_e[works] = e, work_q[works] = next[e]++, work_n[works++] = 1;
            }
        }
    }
    for (int i = 0; i < works; ++i) {
        EDGEVIT_TRIPCOUNT(CFG::moe_work_items)
        const int e = work_e[i], q0 = work_q[i], cnt = work_n[i], block = d.w + e * S;
        for (int q = 0; q < cnt; ++q) {
            EDGEVIT_TRIPCOUNT(CFG::moe_queue)
            for (int c = 0; c < D; ++c) {
                EDGEVIT_TRIPCOUNT(CFG::moe_dim)
#pragma HLS PIPELINE II=1
                arena.put(GATHER + q * D + c, arena.get(d.x + qtok[e][q0 + q] * D + c));
            }
        }
        fc1.d0 = fc2.d0 = cnt;
        fc1.w = block, fc1.b = block + 2 * H * D;
        fc2.w = block + H * D, fc2.b = block + 2 * H * D + 4 * H;
#ifndef __SYNTHESIS__
        const long read_before = linear_weight_words_read();
#endif
        linear_unit<CFG>(params, arena, fc1);
        linear_unit<CFG>(params, arena, fc2);
#ifndef __SYNTHESIS__
        if (moe_weight_reads())
            moe_weight_reads()[moe_weight_reads_pos() + e] += linear_weight_words_read() - read_before;
#endif
        for (int q = 0; q < cnt; ++q) {
            EDGEVIT_TRIPCOUNT(CFG::moe_queue)
            for (int c = 0; c < D; ++c) {
                EDGEVIT_TRIPCOUNT(CFG::moe_dim)
#pragma HLS PIPELINE II=1
                acc[qtok[e][q0 + q]][c] += qw[e][q0 + q] * (i64)arena.get(OUT + q * D + c).to_int();
            }
        }
    }
    for (int n = 0; n < N; ++n) {
        EDGEVIT_TRIPCOUNT(CFG::moe_patches)
        for (int c = 0; c < D; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::moe_dim)
#pragma HLS PIPELINE II=1
            arena.put(d.y + n * D + c, requant(acc[n][c], d.fx2, d.wo));
        }
    }
#ifndef __SYNTHESIS__
    moe_weight_reads_pos() += E;
#endif
}

// y = x + x2 (arena) or x + a parameter tensor at w (x2 = -1; fw fractional bits), [M][C] (d0, d1): exact
// sum at the finer input format, requantised to (fo, wo). Residuals after MoE layers; position embeddings.
template <class CFG>
void add_tensors(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    const int M = d.d0 * d.d1, FB = d.x2 >= 0 ? d.fx2 : d.fw;
    for (int k = 0; k < M; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::add_words)
#pragma HLS PIPELINE II=1
        const i64 b = d.x2 >= 0 ? arena.get(d.x2 + k).to_int() : params.get(d.w + k).to_int();
        arena.put(d.y + k, add_residual(arena.get(d.x + k).to_int(), d.fx, b, FB, d.fo, d.wo));
    }
}

}  // namespace edgevit

#endif
