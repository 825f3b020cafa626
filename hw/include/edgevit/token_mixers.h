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

// v / |v| for each of M rows of length C (d0, d1); a zero row stays zero. One pipelined loop of M + 1 row slots,
// LNL words a cycle (as the layernorm): slot t reads row t's beats (packed.h) into one of two on-chip row copies
// (L2MAX words in WPB banks each) and sums its squares, while it writes row t - 1, normalised by the rsqrt of
// its sum taken at the slot's first step, from the other copy a beat at a time (beat_writer: reads and writes
// on the port's two AXI channels). One m_axi request stream for the layer, no wait per row. Every slot takes
// row_pass_beats beats, so the trip count is fixed.
template <class CFG>
void l2_normalize(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<typename CFG::l2_slots,
                              tripcount_product<tripcount_beats<typename CFG::l2_channels, CFG::WPB>,
                                                tripcount_const<CFG::WPB / CFG::LNL> > > steps;
    typedef typename CFG::beat_t beat_t;
    static word_t row[2][CFG::L2MAX];
#pragma HLS ARRAY_PARTITION variable=row complete dim=1
#pragma HLS ARRAY_PARTITION variable=row cyclic factor=CFG::WPB dim=2
    const int M = d.d0, C = d.d1, S = CFG::WPB / CFG::LNL;
    const int PB = row_pass_beats<CFG>(d.x % CFG::WPB == 0 && d.y % CFG::WPB == 0, C), n = (M + 1) * PB * S;
#ifndef __SYNTHESIS__
    unit_loop_begin();
    unit_loop_note(n);
#endif
    beat_writer<CFG> out;
    out.start(arena, d.y);
    int t = 0, b = 0, sub = 0, si = d.x, so = d.y - C, j = 0;   // slot, beat and lanes sub * LNL.. of its pass
    i64 s = 0, rs = 0;
    beat_t v = 0;
    for (int i = 0; i < n; ++i) {
        EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
        if (b == 0 && sub == 0 && t > 0) {   // row t - 1 is summed: its scale
            rs = s > 0 ? rsqrt_norm(s, j) : 0;
            s = 0;
        }
        const int ib = si / CFG::WPB + b, ci = ib * CFG::WPB - si;   // ci: channel of the beat's lane 0
        const int ob = so / CFG::WPB + b, co = ob * CFG::WPB - so;
        if (t < M) {
            if (sub == 0) v = ci < C ? arena.beat(ib) : beat_t(0);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = ci + l;
                if (c >= 0 && c < C) {
                    const i64 x = lane_of(v, l);
                    row[t & 1][c] = x;
                    s += x * x;
                }
            }
        }
        if (t > 0 && co < C) {
            out.to(arena, ob);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = co + l;
                if (c >= 0 && c < C)
                    out.set(l, word_t(requant(((i64)row[(t - 1) & 1][c] * rs) >> (j + TABLE_FRAC - NORM_FRAC),
                                              NORM_FRAC - d.fo, d.wo)));
            }
        }
        if (++sub == S) {
            sub = 0;
            if (++b == PB) {
                b = 0;
                ++t;
                si += C;
                so += C;
            }
        }
    }
    out.flush(arena);
#ifndef __SYNTHESIS__
    unit_loop_end();
#endif
}

// qn [T][D] at d.x (fx), kn [T][D] at d.x2 (fx2), w_g [D] at d.w (fw); T = d0 <= TMAX, D = d1 <= DMAX; y at
// d.y, which starts at the same lane of a beat as kn (layer_table puts every tensor on a 32-word boundary).
// w_g is read once into an on-chip copy (a beat a cycle), then three pipelined loops over the tokens' beats, LNL
// words a cycle, each one m_axi request stream: the scores a_t = qn_t . w_g (kept on chip, TMAX 64-bit words)
// and their sum of squares; g = sum_t (a_t / |a|) qn_t (DMAX 64-bit sums in WPB banks; a feature's sum is updated
// once a row, row_pass_beats * WPB / LNL steps apart); y_t = g * kn_t, kn's beats in and y's beats out on the
// port's two AXI channels.
template <class CFG>
void additive_attention(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<typename CFG::additive_tokens,
                              tripcount_product<tripcount_beats<typename CFG::additive_dim, CFG::WPB>,
                                                tripcount_const<CFG::WPB / CFG::LNL> > > steps;
    typedef typename CFG::beat_t beat_t;
    static i64 a[CFG::TMAX], g[CFG::DMAX];
    static word_t wg[1][CFG::DMAX];
#pragma HLS ARRAY_PARTITION variable=g cyclic factor=CFG::WPB
#pragma HLS ARRAY_PARTITION variable=wg cyclic factor=CFG::WPB dim=2
#pragma HLS DEPENDENCE variable=g inter false
    const int T = d.d0, D = d.d1, S = CFG::WPB / CFG::LNL;
    const int PB = row_pass_beats<CFG>(d.x % CFG::WPB == 0 && d.x2 % CFG::WPB == 0, D), n = T * PB * S;
    const int dy = (d.y - d.x2) / CFG::WPB;   // y's beat of kn's beat
#ifndef __SYNTHESIS__
    if ((d.y - d.x2) % CFG::WPB) std::abort();
    unit_loop_begin();
#endif
    load_rows<CFG, word_source<CFG>, typename CFG::additive_dim>(params, d.w, 1, D, wg);
    i64 s = 0, rs = 0, an = 0;   // the scores' sum of squares, its rsqrt, a token's normalised score
    int j = 0;
    for (int pass = 0; pass < 3; ++pass) {
        const int base = pass < 2 ? d.x : d.x2;
        if (pass == 1) rs = s > 0 ? rsqrt_norm(s, j) : 0;
        beat_writer<CFG> out;
        if (pass == 2) out.start(arena, d.y);
#ifndef __SYNTHESIS__
        unit_loop_note(n);
#endif
        int t = 0, b = 0, sub = 0, si = base;
        i64 acc = 0;
        beat_t v = 0;
        for (int i = 0; i < n; ++i) {
            EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
            const int ib = si / CFG::WPB + b, ci = ib * CFG::WPB - si;   // ci: feature of the beat's lane 0
            if (sub == 0) v = ci < D ? arena.beat(ib) : beat_t(0);
            if (pass == 1 && b == 0 && sub == 0) an = (a[t] * rs) >> (j + TABLE_FRAC - NORM_FRAC);
            if (pass == 2 && ci < D) out.to(arena, ib + dy);
            i64 p = 0;
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = ci + l;
                if (c >= 0 && c < D) {
                    const i64 x = lane_of(v, l);
                    if (pass == 0) p += x * (i64)wg[0][c];
                    if (pass == 1) g[c] = (t == 0 ? 0 : g[c]) + an * x;
                    if (pass == 2)
                        out.set(l, word_t(requant(shift_floor(g[c], d.fx) * x, NORM_FRAC + d.fx2 - d.fo, d.wo)));
                }
            }
            acc += p;
            const bool last = sub == S - 1 && b == PB - 1;
            if (pass == 0 && last) {
                a[t] = shift_floor(acc, d.fx + d.fw - NORM_FRAC);
                s += a[t] * a[t];
                acc = 0;
            }
            if (++sub == S) {
                sub = 0;
                if (++b == PB) {
                    b = 0;
                    ++t;
                    si += D;
                }
            }
        }
        out.flush(arena);
    }
#ifndef __SYNTHESIS__
    unit_loop_end();
#endif
}

}  // namespace edgevit

#endif
