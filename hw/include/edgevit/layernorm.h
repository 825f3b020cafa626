// LayerNorm over the last axis in one pass: the sums S1 = sum x and S2 = sum x^2 are exact integers, and
//   xhat = (C x - S1) / sqrt(C S2 - S1^2 + eps C^2)
// needs no division by C and is exact except for the table rsqrt (a zero-variance row gives xhat = 0).
// eps comes with 2 fx fractional bits (eps_lo/eps_hi). One row of CMAX words, gamma and beta are on chip.
#ifndef EDGEVIT_LAYERNORM_H
#define EDGEVIT_LAYERNORM_H

#include "descriptor.h"
#include "fixed_math.h"
#include "packed.h"

namespace edgevit {

static const int XHAT_FRAC = 16;

// x [M][C] at d.x (d0, d1), gamma [C] at d.w, beta [C] at d.w2 (one format, fw bits), y [M][C] at d.y.
// gamma and beta are read once per layer into on-chip buffers, so each pass over a row moves one word a
// cycle over its port (II=1). The passes are not unrolled: with 16-bit m_axi ports more lanes would only
// raise the II (they used the linear unit's LI lanes and bought nothing).
template <class CFG>
void layernorm_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static word_t row[CFG::CMAX], gamma[CFG::CMAX], beta[CFG::CMAX];
    const int M = d.d0, C = d.d1;
    const i64 eps = eps_of(d);
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
    for (int t = 0; t < M; ++t) {
        EDGEVIT_TRIPCOUNT(CFG::ln_rows)
        i64 s1 = 0, s2 = 0;
        for (int c = 0; c < C; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::ln_channels)
#pragma HLS PIPELINE II=1
            row[c] = arena.get(d.x + t * C + c);
            i64 v = row[c];
            s1 += v;
            s2 += v * v;
        }
        i64 dv = (i64)C * s2 - s1 * s1 + eps * C * C;
        int j = 0;
        i64 rs = dv > 0 ? rsqrt_norm(dv, j) : 0;
        for (int c = 0; c < C; ++c) {
            EDGEVIT_TRIPCOUNT(CFG::ln_channels)
#pragma HLS PIPELINE II=1
            i64 xhat = (((i64)C * row[c] - s1) * rs) >> (j + TABLE_FRAC - XHAT_FRAC);
            i64 acc = (i64)gamma[c] * xhat + ((i64)beta[c] << XHAT_FRAC);
            arena.put(d.y + t * C + c, requant(acc, d.fw + XHAT_FRAC - d.fo, d.wo));
        }
    }
}

}  // namespace edgevit

#endif
