// Data movement for MobileViT blocks and heads: patch unfold/fold, channel concat, token rows, global average pool;
// and the channel scale of squeeze-excitation gates.
// The innermost loops are pipelined at II=1; unfold/fold and concat move a beat a cycle when rows are whole beats,
// the others a word.
#ifndef EDGEVIT_LAYOUT_H
#define EDGEVIT_LAYOUT_H

#include "descriptor.h"
#include "packed.h"
#include "tripcount_product.h"
#include "unit_loops.h"

namespace edgevit {

// The WPB words of beat v requantised from fx to fo (a shift and a saturation per lane: no multiplier).
template <class CFG>
typename CFG::beat_t requant_beat(typename CFG::beat_t v, int s, int w) {
    typename CFG::beat_t r = 0;
    for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
        set_lane(r, l, word_t(requant(lane_of(v, l), s, w)));
    }
    return r;
}

// Where word i of a sequence-order walk over unfold's [PH * PW][N][C] (a run of `step` words of a pixel) lies in
// the [H][W][C] map, and the next position: channel c, then token column nx and row ny, then patch column px and
// row py.
struct unfold_walk {
    int c, nx, ny, px, py;
    unfold_walk() : c(0), nx(0), ny(0), px(0), py(0) {}
    int map(int W, int C, int PH, int PW) const { return ((ny * PH + py) * W + nx * PW + px) * C + c; }
    void next(int step, int C, int NW, int NH, int PW) {
        c += step;
        if (c == C) {
            c = 0;
            if (++nx == NW) {
                nx = 0;
                if (++ny == NH) {
                    ny = 0;
                    if (++px == PW) {
                        px = 0;
                        ++py;
                    }
                }
            }
        }
    }
};

// [H][W][C] -> [PH * PW][N][C] with N = (H / PH) * (W / PW) (H, W, C, PH, PW = d0..d4): token n of sequence p
// is pixel (ny * PH + py, nx * PW + px), as MobileViT's unfold orders it. fold is the inverse (same dims).
// One pipelined loop over the whole tensor in sequence order (one m_axi request stream a layer). A pixel's C
// channels are consecutive on both sides, so when C is whole beats (and x, y start on beats, as layer_table lays
// tensors out) a cycle copies a beat; otherwise a word.
template <class CFG>
void unfold_fold(word_port<CFG>& arena, const layer_desc& d, bool fold) {
    typedef tripcount_beats<typename CFG::unfold_words, CFG::WPB> beats_trip;
    const int H = d.d0, W = d.d1, C = d.d2, PH = d.d3, PW = d.d4, NW = W / PW, NH = H / PH, words = H * W * C;
    const bool whole = C % CFG::WPB == 0 && d.x % CFG::WPB == 0 && d.y % CFG::WPB == 0;
    unfold_walk at;
#ifndef __SYNTHESIS__
    unit_loop_single(whole ? words / CFG::WPB : words);
#endif
    if (whole) {
        for (int i = 0; i < words / CFG::WPB; ++i) {
            EDGEVIT_TRIPCOUNT(beats_trip)
#pragma HLS PIPELINE II=1
            const int seq = i * CFG::WPB, map = at.map(W, C, PH, PW);
            arena.put_whole_beat((d.y + (fold ? map : seq)) / CFG::WPB,
                                 arena.beat((d.x + (fold ? seq : map)) / CFG::WPB));
            at.next(CFG::WPB, C, NW, NH, PW);
        }
    } else {
        for (int i = 0; i < words; ++i) {
            EDGEVIT_TRIPCOUNT(CFG::unfold_words)
#pragma HLS PIPELINE II=1
            const int map = at.map(W, C, PH, PW);
            arena.put(d.y + (fold ? map : i), arena.get(d.x + (fold ? i : map)));
            at.next(1, C, NW, NH, PW);
        }
    }
}

// [M][CA] at d.x ++ [M][CB] at d.x2 -> [M][CA + CB] (M, CA, CB = d0..d2), both requantised to fo. One pipelined
// loop over the output: a beat a cycle when CA and CB are whole beats (and the tensors start on beats), each
// output beat one input beat requantised lane by lane; otherwise a word a cycle.
template <class CFG>
void concat(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_beats<typename CFG::concat_words, CFG::WPB> beats_trip;
    const int M = d.d0, CA = d.d1, CB = d.d2, words = M * (CA + CB);
    const int sa = d.fx - d.fo, sb = d.fx2 - d.fo;
    const bool whole = CA % CFG::WPB == 0 && CB % CFG::WPB == 0 && d.x % CFG::WPB == 0 && d.x2 % CFG::WPB == 0 &&
                       d.y % CFG::WPB == 0;
    int t = 0, c = 0;   // output row and column
#ifndef __SYNTHESIS__
    unit_loop_single(whole ? words / CFG::WPB : words);
#endif
    if (whole) {
        for (int i = 0; i < words / CFG::WPB; ++i) {
            EDGEVIT_TRIPCOUNT(beats_trip)
#pragma HLS PIPELINE II=1
            const bool a = c < CA;
            const int src = a ? d.x + t * CA + c : d.x2 + t * CB + c - CA;
            arena.put_whole_beat(d.y / CFG::WPB + i, requant_beat<CFG>(arena.beat(src / CFG::WPB), a ? sa : sb, d.wo));
            c += CFG::WPB;
            if (c == CA + CB) c = 0, ++t;
        }
    } else {
        for (int i = 0; i < words; ++i) {
            EDGEVIT_TRIPCOUNT(CFG::concat_words)
#pragma HLS PIPELINE II=1
            const bool a = c < CA;
            arena.put(d.y + i, requant(arena.get(a ? d.x + t * CA + c : d.x2 + t * CB + c - CA), a ? sa : sb, d.wo));
            if (++c == CA + CB) c = 0, ++t;
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
