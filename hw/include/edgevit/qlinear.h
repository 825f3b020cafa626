// int8 layers of QDQ models (ops.py kinds qlinear, qdwconv, qavgpool, qadd, qtable): int8 x int8 -> exact
// accumulator -> requantisation to int8 per output channel (requant.h). Operands hold q - zero_point, so a
// layer needs no zero-point terms: acc = sum x w + b, with b onnxruntime's int32 bias.
//
// qgemm_unit (kind qlinear) runs on the linear unit's tile loaders (linear_load_x / linear_load_w of
// linear.h: input tile, weight tile and the 64-bit biases) with the same MAC steps (linear_mac_step), and
// writes each output through requantize_int8 with the record of its channel (d.w2). Its tiles are its own
// copies: it is not yet the linear unit's epilogue (docs/fpga.md, int8 models).
#ifndef EDGEVIT_QLINEAR_H
#define EDGEVIT_QLINEAR_H

#include "conv.h"
#include "layout.h"
#include "linear.h"
#include "requant.h"

namespace edgevit {

// The requantisation records of weight rows [n0, n0 + LO).
template <class CFG>
void qlinear_load_requant(word_source<CFG>& params, const layer_desc& d, int n0, requant_param rq[CFG::LO]) {
    const int rows = d.d2 - n0 < CFG::LO ? d.d2 - n0 : CFG::LO;
#ifndef __SYNTHESIS__
    unit_loop_note(CFG::LO);
#endif
    for (int l = 0; l < CFG::LO; ++l) {
#pragma HLS PIPELINE II=4
        if (l < rows) rq[l] = read_requant(params, d.w2 + REQUANT_RECORD_WORDS * (n0 + l));
    }
}

// Outputs [m0, m0 + tm) x [n0, n0 + LO): tm x ceil(K / LI) MAC steps (linear_mac_step, linear.h), then one
// output word a cycle through requantize_int8.
template <class CFG>
void qlinear_compute(word_port<CFG>& arena, const layer_desc& d, int m0, int tm, int n0,
                     word_t x[CFG::TM][CFG::KMAX], word_t w[(CFG::LO + 1) / 2][CFG::KMAX][2],
                     const i64 bias[CFG::LO], const requant_param rq[CFG::LO]) {
    typedef tripcount_product<typename CFG::linear_tile_tokens, typename CFG::linear_k_steps> mac_steps;
    typedef tripcount_product<typename CFG::linear_tile_tokens, tripcount_const<CFG::LO> > out_words;
    static i64 res[CFG::TM][CFG::LO];
#pragma HLS ARRAY_PARTITION variable=res complete dim=2
    const int K = d.d1, N = d.d2;
    i64 acc[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=acc complete
    int m = 0, k0 = 0;
    const int steps = tm * ((K + CFG::LI - 1) / CFG::LI);
    const int cols = N - n0 < CFG::LO ? N - n0 : CFG::LO;
#ifndef __SYNTHESIS__
    unit_loop_note(steps);
    unit_loop_note(tm * cols);
#endif
    for (int i = 0; i < steps; ++i) {
        EDGEVIT_TRIPCOUNT(mac_steps)
#pragma HLS PIPELINE II=1
        linear_mac_step<CFG>(x, w, bias, acc, res, K, m, k0);
    }
    int em = 0, lo = 0;
    for (int i = 0; i < tm * cols; ++i) {
        EDGEVIT_TRIPCOUNT(out_words)
#pragma HLS PIPELINE II=1
        arena.put(d.y + (m0 + em) * N + n0 + lo, word_t(requantize_int8(res[em][lo], rq[lo], d.act == ACT_RELU)));
        if (++lo == cols) {
            lo = 0;
            ++em;
        }
    }
}

// x [M][K] at d.x, w [N][K] at d.w, int32 bias [N] (64-bit words) at d.b, records [N][4] at d.w2, y [M][N] at
// d.y; M, K, N = d0, d1, d2; d3 = 1: weight tiles outer (as linear_unit).
template <class CFG>
void qgemm_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static word_t x[CFG::TM][CFG::KMAX], w[(CFG::LO + 1) / 2][CFG::KMAX][2];
    static i64 bias[CFG::LO];
    static requant_param rq[CFG::LO];
#pragma HLS ARRAY_PARTITION variable=x cyclic factor=CFG::XBANKS dim=2
#pragma HLS ARRAY_PARTITION variable=w complete dim=1
#pragma HLS ARRAY_PARTITION variable=w cyclic factor=CFG::XBANKS dim=2
#pragma HLS ARRAY_RESHAPE variable=w complete dim=3
#pragma HLS ARRAY_PARTITION variable=bias complete
#pragma HLS ARRAY_PARTITION variable=rq complete
#ifndef __SYNTHESIS__
    unit_loop_begin();
#endif
    const int M = d.d0, N = d.d2;
    if (d.d3) {
        for (int n0 = 0; n0 < N; n0 += CFG::LO) {
            EDGEVIT_TRIPCOUNT(CFG::linear_n_tiles)
            linear_load_w<CFG>(params, d, n0, w, bias);
            qlinear_load_requant<CFG>(params, d, n0, rq);
            for (int m0 = 0; m0 < M; m0 += CFG::TM) {
                EDGEVIT_TRIPCOUNT(CFG::linear_m_tiles)
                const int tm = M - m0 < CFG::TM ? M - m0 : CFG::TM;
                linear_load_x<CFG>(arena, d, m0, tm, x);
                qlinear_compute<CFG>(arena, d, m0, tm, n0, x, w, bias, rq);
            }
        }
    } else {
        for (int m0 = 0; m0 < M; m0 += CFG::TM) {
            EDGEVIT_TRIPCOUNT(CFG::linear_m_tiles)
            const int tm = M - m0 < CFG::TM ? M - m0 : CFG::TM;
            linear_load_x<CFG>(arena, d, m0, tm, x);
            for (int n0 = 0; n0 < N; n0 += CFG::LO) {
                EDGEVIT_TRIPCOUNT(CFG::linear_n_tiles)
                linear_load_w<CFG>(params, d, n0, w, bias);
                qlinear_load_requant<CFG>(params, d, n0, rq);
                qlinear_compute<CFG>(arena, d, m0, tm, n0, x, w, bias, rq);
            }
        }
    }
#ifndef __SYNTHESIS__
    unit_loop_end();
#endif
}

// The mean over tokens of x [M][C] (d0, d1) at d.x, requantised per channel with M = x_scale / (y_scale M)
// (records at d.w2): the exact sum of avgpool (token_sum, layout.h).
template <class CFG>
void qavgpool(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    for (int c = 0; c < d.d1; ++c) {
        EDGEVIT_TRIPCOUNT(CFG::avgpool_channels)
        arena.put(d.y + c, word_t(requantize_int8(token_sum<CFG>(arena, d, c),
                                                  read_requant(params, d.w2 + REQUANT_RECORD_WORDS * c), false)));
    }
}

// Depthwise KxK convolution on int8 (ops.py kind qdwconv): depthwise_unit (conv.h) with requantisation as its
// epilogue (dims, weights [C][K][K] at d.w, int32 biases at d.b, each channel's record at d.w2).
template <class CFG>
void qdwconv_unit(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    depthwise_unit<CFG, true>(params, arena, d);
}

// a + b of two int8 tensors (ops.py kind qadd: a residual) at d.x, d.x2 ([d0][d1] words) to d.y:
// round_half_even((a MA + b MB) 2^-n), clipped to int8 minus zy (record at d.w2: MA >> 15, MA & 32767,
// MB >> 15, MB & 32767, n, zy). Two arena reads a word: II=2.
template <class CFG>
void qadd(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    const i64 ma = ((i64)params.get(d.w2).to_int() << 15) | params.get(d.w2 + 1).to_int();
    const i64 mb = ((i64)params.get(d.w2 + 2).to_int() << 15) | params.get(d.w2 + 3).to_int();
    const int n = params.get(d.w2 + 4).to_int(), zy = params.get(d.w2 + 5).to_int();
    for (int i = 0; i < d.d0 * d.d1; ++i) {
        EDGEVIT_TRIPCOUNT(CFG::add_words)  // the element count of every add (add_tensors and qadd)
#pragma HLS PIPELINE II=2
        const i64 y = rne_shift((i64)arena.get(d.x + i).to_int() * ma + (i64)arena.get(d.x2 + i).to_int() * mb, n);
        arena.put(d.y + i, word_t(y < -128 - zy ? -128 - zy : (y > 127 - zy ? 127 - zy : y)));
    }
}

static const int QTABLE_WORDS = 512, QTABLE_OFFSET = 256;  // entry x + 256 for every q - zero point

// An elementwise int8 function (onnxruntime's result for each int8 input, computed at compile time: SiLU,
// Sigmoid, HardSwish, ...): the 512-word table at d.w on chip, then x [d0][d1] at d.x to y at d.y, a word a
// cycle.
template <class CFG>
void qtable(word_source<CFG>& params, word_port<CFG>& arena, const layer_desc& d) {
    static word_t table[QTABLE_WORDS];
    for (int i = 0; i < QTABLE_WORDS; ++i) {
#pragma HLS PIPELINE II=1
        table[i] = params.get(d.w + i);
    }
    for (int i = 0; i < d.d0 * d.d1; ++i) {
        EDGEVIT_TRIPCOUNT(CFG::add_words)  // elementwise passes: counted with the adds (ops.py)
#pragma HLS PIPELINE II=1
        arena.put(d.y + i, table[arena.get(d.x + i).to_int() + QTABLE_OFFSET]);
    }
}

}  // namespace edgevit

#endif
