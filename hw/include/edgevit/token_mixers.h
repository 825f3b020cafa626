// Token mixers of EfficientFormer and SwiftFormer.
//
// pool_mixer: EfficientFormer's pooling mixer, m = avgpool_KxK(x) - x with stride 1 and padding K/2, averaging
// only the pixels inside the map (count_include_pad=False): the exact window sum times round(2^24 / count).
// With a layer scale s it fuses the block's residual: y = x + s * m.
//
// l2_normalize and additive_attention: SwiftFormer's efficient additive attention,
//   qn = q / |q|, kn = k / |k| (per token), a = qn . w_g (scale folded into w_g), a = a / |a| (over tokens),
//   g = sum_t a_t qn_t, y_t = g * kn_t.
// The query/key/proj/final projections run on the shared linear unit. Norms use the exact integer sum of
// squares and the table rsqrt; intermediates keep 16 fractional bits.
#ifndef EDGEVIT_TOKEN_MIXERS_H
#define EDGEVIT_TOKEN_MIXERS_H

#include "descriptor.h"
#include "fixed_math.h"
#include "packed.h"
#include "tripcount_product.h"

namespace edgevit {

static const int NORM_FRAC = 16;

// x [H][W][C] at d.x (d0, d1, d2), K = d3; layer scale [C] at d.w (fw bits), read once per layer into an on-chip
// copy, or d.w = -1. One pipelined loop over the pixels, each a pass over the port beats that hold its C channels
// per window tap and then one writing the C outputs a beat at a time, LNL words a cycle (as the layernorm): one
// m_axi request stream for the layer. Every pass takes PB beats, the most a run of C words can span (C / WPB when
// the rows start on beats), so the trip count is fixed; a tap outside the map reads nothing and adds zeros. The
// window sums and the centre pixel of the C channels wait on chip (PCMAX words in WPB banks).
template <class CFG>
void pool_mixer(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount<CFG::pool_k::min * CFG::pool_k::min + 1, CFG::pool_k::max * CFG::pool_k::max + 1,
                      CFG::pool_k::avg * CFG::pool_k::avg + 1> passes;
    typedef tripcount_product<tripcount_beats<typename CFG::pool_channels, CFG::WPB>,
                              tripcount_const<CFG::WPB / CFG::LNL> > pass_steps;
    typedef tripcount_product<tripcount_product<typename CFG::pool_rows, typename CFG::pool_cols>,
                              tripcount_product<passes, pass_steps> > steps;
    typedef typename CFG::beat_t beat_t;
    static i64 sum[CFG::PCMAX];
    static i64 centre[CFG::PCMAX];
    static word_t scale[CFG::PCMAX];
#pragma HLS ARRAY_PARTITION variable=sum cyclic factor=CFG::WPB
#pragma HLS ARRAY_PARTITION variable=centre cyclic factor=CFG::WPB
#pragma HLS ARRAY_PARTITION variable=scale cyclic factor=CFG::WPB
    const int H = d.d0, W = d.d1, C = d.d2, K = d.d3, P = K / 2;
    const int PB = d.x % CFG::WPB || d.y % CFG::WPB || C % CFG::WPB ? (C + CFG::WPB - 2) / CFG::WPB + 1
                                                                     : C / CFG::WPB;
    if (d.w >= 0) {
        for (int c = 0; c < C; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::pool_channels)
#pragma HLS PIPELINE II=1
            scale[c] = params.get(d.w + c);
        }
    }
    int oy = 0, ox = 0, ky = 0, kx = 0, b = 0, sub = 0;   // ky == K: the write pass; beat b of the pass
    beat_t v = 0, o = 0;
    ap_uint<CFG::WPB> lanes = 0;
    for (int i = 0; i < H * W * (K * K + 1) * PB * (CFG::WPB / CFG::LNL); ++i) {
        EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
        if (ky < K) {
            const int iy = oy + ky - P, ix = ox + kx - P;
            const bool inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
            // a tap outside the map walks pixel 0's beats (so that its zeros reach every channel) and reads none
            const int s = d.x + (inside ? iy * W + ix : 0) * C, beat = s / CFG::WPB + b, c0 = beat * CFG::WPB - s;
            if (sub == 0) v = inside && c0 < C ? arena.beat(beat) : beat_t(0);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = c0 + l;
                if (c >= 0 && c < C) {
                    const i64 x = lane_of(v, l);
                    sum[c] = (ky == 0 && kx == 0 ? 0 : sum[c]) + x;
                    if (ky == P && kx == P) centre[c] = x;
                }
            }
        } else {
            const int y0 = oy - P > 0 ? oy - P : 0, y1 = oy - P + K - 1 < H - 1 ? oy - P + K - 1 : H - 1;
            const int x0 = ox - P > 0 ? ox - P : 0, x1 = ox - P + K - 1 < W - 1 ? ox - P + K - 1 : W - 1;
            const int n = (y1 - y0 + 1) * (x1 - x0 + 1);   // window pixels inside the map
            const i64 r = ((1LL << 24) + n / 2) / n;         // a K*K-entry ROM in hardware
            const int s = d.y + (oy * W + ox) * C, beat = s / CFG::WPB + b, c0 = beat * CFG::WPB - s;
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = c0 + l;
                if (c >= 0 && c < C) {
                    const i64 xc = centre[c], m = sum[c] * r - (xc << 24);
                    set_lane(o, l, d.w >= 0 ? requant((i64)scale[c] * m + (xc << (24 + d.fw)),
                                                      d.fx + 24 + d.fw - d.fo, d.wo)
                                            : requant(m, d.fx + 24 - d.fo, d.wo));
                    lanes[l] = 1;
                }
            }
            if (sub == CFG::WPB / CFG::LNL - 1 && lanes != 0) {
                arena.put_beat(beat, o, lanes);
                lanes = 0;
            }
        }
        if (++sub == CFG::WPB / CFG::LNL) {
            sub = 0;
            if (++b == PB) {
                b = 0;
                if (ky == K) {
                    ky = 0;
                    if (++ox == W) {
                        ox = 0;
                        ++oy;
                    }
                } else if (++kx == K) {
                    kx = 0;
                    ++ky;
                }
            }
        }
    }
}

// v / |v| for each of M rows of length C (d0, d1); a zero row stays zero. Each row takes two pipelined passes over
// the port beats that hold it (packed.h), LNL words a cycle as in the layernorm: one copying the row on chip (L2MAX
// words in WPB banks) and summing its squares, one writing the normalised words a beat at a time.
template <class CFG>
void l2_normalize(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<tripcount_beats<typename CFG::l2_channels, CFG::WPB>,
                              tripcount_const<CFG::WPB / CFG::LNL> > row_steps;
    typedef typename CFG::beat_t beat_t;
    static word_t row[CFG::L2MAX];
#pragma HLS ARRAY_PARTITION variable=row cyclic factor=CFG::WPB
    const int M = d.d0, C = d.d1;
    for (int t = 0; t < M; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::l2_rows)
        i64 s = 0;
        const int si = d.x + t * C, fi = si / CFG::WPB, bi = (si + C - 1) / CFG::WPB - fi + 1;
        int c0 = -(si % CFG::WPB), b = 0, sub = 0;   // channel of the beat's lane 0; beat; lanes sub * LNL..
        beat_t v = 0;
        for (int i = 0; i < bi * (CFG::WPB / CFG::LNL); ++i) {
            EDGEVIT_TRIPCOUNT(row_steps)
#pragma HLS PIPELINE II=1
            if (sub == 0) v = arena.beat(fi + b);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = c0 + l;
                if (c >= 0 && c < C) {
                    const i64 x = lane_of(v, l);
                    row[c] = x;
                    s += x * x;
                }
            }
            if (++sub == CFG::WPB / CFG::LNL) {
                sub = 0;
                ++b;
                c0 += CFG::WPB;
            }
        }
        int j = 0;
        const i64 rs = s > 0 ? rsqrt_norm(s, j) : 0;
        const int so = d.y + t * C, fo = so / CFG::WPB, bo = (so + C - 1) / CFG::WPB - fo + 1;
        c0 = -(so % CFG::WPB), b = 0, sub = 0;
        ap_uint<CFG::WPB> lanes = 0;
        for (int i = 0; i < bo * (CFG::WPB / CFG::LNL); ++i) {
            EDGEVIT_TRIPCOUNT(row_steps)
#pragma HLS PIPELINE II=1
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = c0 + l;
                if (c >= 0 && c < C) {
                    set_lane(v, l, word_t(requant(((i64)row[c] * rs) >> (j + TABLE_FRAC - NORM_FRAC),
                                                  NORM_FRAC - d.fo, d.wo)));
                    lanes[l] = 1;
                }
            }
            if (++sub == CFG::WPB / CFG::LNL) {
                arena.put_beat(fo + b, v, lanes);
                lanes = 0;
                sub = 0;
                ++b;
                c0 += CFG::WPB;
            }
        }
    }
}

// qn [T][D] at d.x (fx), kn [T][D] at d.x2 (fx2), w_g [D] at d.w (fw); T = d0 <= TMAX, D = d1 <= DMAX.
template <class CFG>
void additive_attention(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static i64 a[CFG::TMAX];
    i64 g[CFG::DMAX];
    const int T = d.d0, D = d.d1;
    i64 s = 0;
    for (int t = 0; t < T; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::additive_tokens)
        i64 acc = 0;
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::additive_dim)
#pragma HLS PIPELINE II=1
            acc += (i64)arena.get(d.x + t * D + k) * (i64)params.get(d.w + k);
        }
        a[t] = shift_floor(acc, d.fx + d.fw - NORM_FRAC);
        s += a[t] * a[t];
    }
    int j = 0;
    i64 rs = s > 0 ? rsqrt_norm(s, j) : 0;
    for (int k = 0; k < D; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::additive_dim)
        g[k] = 0;
    }
    for (int t = 0; t < T; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::additive_tokens)
        i64 an = (a[t] * rs) >> (j + TABLE_FRAC - NORM_FRAC);
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::additive_dim)
#pragma HLS PIPELINE II=1
            g[k] += an * (i64)arena.get(d.x + t * D + k);
        }
    }
    for (int k = 0; k < D; ++k) {
        EDGEVIT_TRIPCOUNT(CFG::additive_dim)
        g[k] = shift_floor(g[k], d.fx);
    }
    for (int t = 0; t < T; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::additive_tokens)
        for (int k = 0; k < D; ++k) {
            EDGEVIT_TRIPCOUNT(CFG::additive_dim)
#pragma HLS PIPELINE II=1
            arena.put(d.y + t * D + k,
                      requant(g[k] * (i64)arena.get(d.x2 + t * D + k), NORM_FRAC + d.fx2 - d.fo, d.wo));
        }
    }
}

}  // namespace edgevit

#endif
