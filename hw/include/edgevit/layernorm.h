// LayerNorm over the last axis in one pass: the sums S1 = sum x and S2 = sum x^2 are exact integers, and
//   xhat = (C x - S1) / sqrt(C S2 - S1^2 + eps C^2)
// needs no division by C and is exact except for the table rsqrt (a zero-variance row gives xhat = 0).
// eps comes with 2 fx fractional bits (eps_lo/eps_hi). One row of CMAX words, gamma and beta are on chip.
#ifndef EDGEVIT_LAYERNORM_H
#define EDGEVIT_LAYERNORM_H

#include "descriptor.h"
#include "fixed_math.h"
#include "packed.h"
#include "tripcount_product.h"

namespace edgevit {

static const int XHAT_FRAC = 16;

// x [M][C] at d.x (d0, d1), gamma [C] at d.w, beta [C] at d.w2 (one format, fw bits), y [M][C] at d.y.
// gamma and beta are read once per layer into on-chip buffers. Then one pipelined loop of M + 1 row slots, LNL =
// min(LI, WPB) words a cycle (WPB / LNL cycles a beat, packed.h): slot t reads row t's beats into one of two
// on-chip row copies and sums its words and their squares, while it normalises row t - 1 (its rsqrt taken at the
// slot's first step) from the other copy and writes it a beat at a time (beat_writer: reads and writes on the
// port's two AXI channels). One m_axi request stream for the rows, no wait per row; every slot takes
// row_pass_beats beats. The rows, gamma and beta are split into WPB banks so that a beat's words land in distinct
// ones.
template <class CFG>
void layernorm_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<typename CFG::ln_slots,
                              tripcount_product<tripcount_beats<typename CFG::ln_channels, CFG::WPB>,
                                                tripcount_const<CFG::WPB / CFG::LNL> > > steps;
    typedef typename CFG::beat_t beat_t;
    static word_t row[2][CFG::CMAX], gamma[CFG::CMAX], beta[CFG::CMAX];
#pragma HLS ARRAY_PARTITION variable=row complete dim=1
#pragma HLS ARRAY_PARTITION variable=row cyclic factor=CFG::WPB dim=2
#pragma HLS ARRAY_PARTITION variable=gamma cyclic factor=CFG::WPB
#pragma HLS ARRAY_PARTITION variable=beta cyclic factor=CFG::WPB
    const int M = d.d0, C = d.d1, S = CFG::WPB / CFG::LNL;
    const int PB = row_pass_beats<CFG>(d.x % CFG::WPB == 0 && d.y % CFG::WPB == 0, C), n = (M + 1) * PB * S;
    const i64 eps = eps_of(d);
#ifndef __SYNTHESIS__
    unit_loop_begin();
    unit_loop_note(C);
    unit_loop_note(C);
    unit_loop_note(n);
#endif
    for (int c = 0; c < C; ++c) {
        EDGEVIT_TRIPCOUNT(CFG::ln_channels)
#pragma HLS PIPELINE II=1
        gamma[c] = params.get(d.w + c);
    }
    for (int c = 0; c < C; ++c) {
        EDGEVIT_TRIPCOUNT(CFG::ln_channels)
#pragma HLS PIPELINE II=1
        beta[c] = params.get(d.w2 + c);
    }
    beat_writer<CFG> out;
    out.start(arena, d.y);
    int t = 0, b = 0, sub = 0, si = d.x, so = d.y - C, j = 0;   // slot, beat and lanes sub * LNL.. of its pass
    i64 s1 = 0, s2 = 0, m1 = 0, rs = 0;   // row t's sums; row t - 1's sum and rsqrt
    beat_t v = 0;
    for (int i = 0; i < n; ++i) {
        EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
        if (b == 0 && sub == 0 && t > 0) {   // row t - 1 is summed: its scale
            const i64 dv = (i64)C * s2 - s1 * s1 + eps * C * C;
            rs = dv > 0 ? rsqrt_norm(dv, j) : 0;
            m1 = s1;
            s1 = s2 = 0;
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
                    s1 += x;
                    s2 += x * x;
                }
            }
        }
        if (t > 0 && co < C) {
            out.to(arena, ob);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = co + l;
                if (c >= 0 && c < C) {
                    const i64 xhat = (((i64)C * row[(t - 1) & 1][c] - m1) * rs) >> (j + TABLE_FRAC - XHAT_FRAC);
                    const i64 acc = (i64)gamma[c] * xhat + ((i64)beta[c] << XHAT_FRAC);
                    out.set(l, word_t(requant(acc, d.fw + XHAT_FRAC - d.fo, d.wo)));
                }
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

// GroupNorm with one group (MobileViTv2): x [M][C] at d.x (d0, d1) normalised by the mean and variance of all its
// n = M C words, without an affine (the importer folds gamma and beta into the next linear layer); y at d.y.
// Three pipelined passes over the port beats that hold the tensor, LNL words a cycle: the sum S1; the sum of
// squared deviations; the normalised words. With r = round(2^32 / n) (one division per layer):
//   mu = (S1 r) >> 28 (GN_MEAN_FRAC more fractional bits than x), dx = 16 x - mu,
//   v = ((sum((dx dx) >> 8) >> 8) r) >> 24 (2 fx fractional bits), xhat = dx rsqrt(v + eps),
// all within 64 bits for n < 2^24 (golden.global_norm).
static const int GN_MEAN_FRAC = 4;

template <class CFG>
void global_norm(word_port<CFG>& arena, const layer_desc& d) {
    typedef tripcount_product<tripcount_beats<typename CFG::gn_words, CFG::WPB>,
                              tripcount_const<CFG::WPB / CFG::LNL> > steps;
    typedef typename CFG::beat_t beat_t;
    const int n = d.d0 * d.d1;
    const i64 r = ((1LL << 32) + n / 2) / n;
    const int fi = d.x / CFG::WPB, bi = (d.x + n - 1) / CFG::WPB - fi + 1;
    i64 mu = 0, s = 0;
    for (int pass = 0; pass < 2; ++pass) {
        i64 acc = 0;
        int c0 = -(d.x % CFG::WPB), b = 0, sub = 0;   // word of the beat's lane 0; beat; lanes sub * LNL..
        beat_t v = 0;
        for (int i = 0; i < bi * (CFG::WPB / CFG::LNL); ++i) {
            EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
            if (sub == 0) v = arena.beat(fi + b);
            for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
                const int l = sub * CFG::LNL + q, c = c0 + l;
                if (c >= 0 && c < n) {
                    const i64 x = lane_of(v, l), dx = (x << GN_MEAN_FRAC) - mu;
                    acc += pass == 0 ? x : (dx * dx) >> 8;
                }
            }
            if (++sub == CFG::WPB / CFG::LNL) {
                sub = 0;
                ++b;
                c0 += CFG::WPB;
            }
        }
        if (pass == 0) mu = (acc * r) >> 28;
        else s = acc;
    }
    const i64 dv = (((s >> 8) * r) >> 24) + eps_of(d);
    int j = 0;
    const i64 rs = dv > 0 ? rsqrt_norm(dv, j) : 0;
    // x and y start on 32-word boundaries (arena tensors), so output beat b takes its words from input beat b
    const int fo = d.y / CFG::WPB;
    int c0 = -(d.x % CFG::WPB), b = 0, sub = 0;
    beat_t v = 0, o = 0;
    ap_uint<CFG::WPB> lanes = 0;
    for (int i = 0; i < bi * (CFG::WPB / CFG::LNL); ++i) {
        EDGEVIT_TRIPCOUNT(steps)
#pragma HLS PIPELINE II=1
        if (sub == 0) v = arena.beat(fi + b);
        for (int q = 0; q < CFG::LNL; ++q) {
#pragma HLS UNROLL
            const int l = sub * CFG::LNL + q, c = c0 + l;
            if (c >= 0 && c < n) {
                const i64 dx = ((i64)lane_of(v, l) << GN_MEAN_FRAC) - mu;
                set_lane(o, l, word_t(requant((dx * rs) >> (j + TABLE_FRAC - XHAT_FRAC + GN_MEAN_FRAC),
                                              XHAT_FRAC - d.fo, d.wo)));
                lanes[l] = 1;
            }
        }
        if (++sub == CFG::WPB / CFG::LNL) {
            arena.put_beat(fo + b, o, lanes);
            lanes = 0;
            sub = 0;
            ++b;
            c0 += CFG::WPB;
        }
    }
}

}  // namespace edgevit

#endif
