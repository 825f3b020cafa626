// Data movement for MobileViT blocks and heads: patch unfold/fold, channel concat, token rows, global average pool;
// and the channel scale of squeeze-excitation gates.
// The innermost loops are pipelined at II=1: at best one word per cycle.
#ifndef EDGEVIT_LAYOUT_H
#define EDGEVIT_LAYOUT_H

#include "descriptor.h"
#include "packed.h"

namespace edgevit {

// [H][W][C] -> [PH * PW][N][C] with N = (H / PH) * (W / PW) (H, W, C, PH, PW = d0..d4): token n of sequence p
// is pixel (ny * PH + py, nx * PW + px), as MobileViT's unfold orders it. fold is the inverse (same dims).
template <class CFG>
void unfold_fold(word_port<CFG>& arena, const layer_desc& d, bool fold) {
    const int H = d.d0, W = d.d1, C = d.d2, PH = d.d3, PW = d.d4, NW = W / PW, N = (H / PH) * NW;
    for (int py = 0; py < PH; ++py) {
        EDGEVIT_TRIPCOUNT(CFG::unfold_patch_rows)
        for (int px = 0; px < PW; ++px) {
            EDGEVIT_TRIPCOUNT(CFG::unfold_patch_cols)
            for (int n = 0; n < N; ++n) {
                EDGEVIT_TRIPCOUNT(CFG::unfold_tokens)
                for (int c = 0; c < C; ++c) {
                    EDGEVIT_TRIPCOUNT(CFG::unfold_channels)
#pragma HLS PIPELINE II=1
                    const int seq = ((py * PW + px) * N + n) * C + c;
                    const int map = (((n / NW) * PH + py) * W + (n % NW) * PW + px) * C + c;
                    arena.put(d.y + (fold ? map : seq), arena.get(d.x + (fold ? seq : map)));
                }
            }
        }
    }
}

// [M][CA] at d.x ++ [M][CB] at d.x2 -> [M][CA + CB] (M, CA, CB = d0..d2), both requantised to fo.
template <class CFG>
void concat(word_port<CFG>& arena, const layer_desc& d) {
    const int M = d.d0, CA = d.d1, CB = d.d2;
    for (int t = 0; t < M; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::concat_rows)
        for (int c = 0; c < CA; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::concat_first_channels)
#pragma HLS PIPELINE II=1
            arena.put(d.y + t * (CA + CB) + c, requant(arena.get(d.x + t * CA + c), d.fx - d.fo, d.wo));
        }
        for (int c = 0; c < CB; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::concat_second_channels)
#pragma HLS PIPELINE II=1
            arena.put(d.y + t * (CA + CB) + CA + c, requant(arena.get(d.x2 + t * CB + c), d.fx2 - d.fo, d.wo));
        }
    }
}

// Token rows: P parameter rows at d.w (a class token), then M rows of [*][C] at d.x from row R0 (M, C, R0, P =
// d0..d3), all requantised to fo. Prepends class tokens, reads one out, or slices a token range.
template <class CFG>
void token_rows(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    const int M = d.d0, C = d.d1, R0 = d.d2, P = d.d3;
    for (int k = 0; k < P * C; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::token_param_words)
#pragma HLS PIPELINE II=1
        arena.put(d.y + k, requant(params.get(d.w + k), d.fw - d.fo, d.wo));
    }
    for (int k = 0; k < M * C; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::token_copy_words)
#pragma HLS PIPELINE II=1
        arena.put(d.y + P * C + k, requant(arena.get(d.x + R0 * C + k), d.fx - d.fo, d.wo));
    }
}

// Channel scale: [M][C] at d.x times a computed [C] at d.x2 (M, C = d0, d1), the exact product requantised to
// fo. A squeeze-excitation gate.
template <class CFG>
void channel_scale(word_port<CFG>& arena, const layer_desc& d) {
    const int M = d.d0, C = d.d1;
    for (int k = 0; k < M * C; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::scale_words)
#pragma HLS PIPELINE II=2
        const i64 p = (i64)arena.get(d.x + k).to_int() * arena.get(d.x2 + k % C).to_int();
        arena.put(d.y + k, requant(p, d.fx + d.fx2 - d.fo, d.wo));
    }
}

// The exact sum of channel c over the M tokens of [M][C] at d.x (d0, d1): one pipelined loop, a word a cycle.
template <class CFG>
i64 token_sum(word_port<CFG>& arena, const layer_desc& d, int c) {
    i64 s = 0;
    for (int t = 0; t < d.d0; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::avgpool_tokens)
#pragma HLS PIPELINE II=1
        s += arena.get(d.x + t * d.d1 + c);
    }
    return s;
}

// Mean over M tokens of [M][C] (d0, d1): the exact sum times round(2^24 / M).
template <class CFG>
void avgpool(word_port<CFG>& arena, const layer_desc& d) {
    const int M = d.d0, C = d.d1;
    const i64 R = ((1LL << 24) + M / 2) / M;
    for (int c = 0; c < C; ++c) {
        EDGEVIT_TRIPCOUNT(CFG::avgpool_channels)
        arena.put(d.y + c, requant(token_sum<CFG>(arena, d, c) * R, d.fx + 24 - d.fo, d.wo));
    }
}

}  // namespace edgevit

#endif
