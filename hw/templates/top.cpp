// The accelerator's top function (written by edgevit hls from hw/templates/top.cpp; the same for every model,
// see config.h). It reads the layer program (a header and one descriptor per layer, program.bin) from DDR and
// runs each layer on one of the shared, runtime-configured units of include/edgevit, each instantiated exactly
// once. Only the ops config.h flags (EDGEVIT_OP_<KIND>: those of this program) have a case in the dispatch, so
// synthesis builds only the units this program runs. Activations live in one arena in DDR; units keep only their
// tiles on chip.
//
// The five pointers are m_axi masters (program and params share gmem0, the arena has gmem1, input and output
// share gmem2); params, arena, input and output are arrays of AXI_BITS-bit beats of 16-bit words (config.h,
// packed.h), read and written through word_source / word_port. Their 64-bit addresses and ap_start/ap_done are
// the s_axi_control registers of regmap.json, in parameter order, which is what the PYNQ driver writes.
#include <edgevit/units.h>

#include "config.h"

using namespace edgevit;

typedef accel_config::beat_t beat_t;

void edgevit_top(const int* program, const beat_t* params, beat_t* arena, const beat_t* input, beat_t* output) {
#pragma HLS INTERFACE m_axi port=program offset=slave bundle=gmem0 depth=accel_config::program_elements
#pragma HLS INTERFACE m_axi port=params offset=slave bundle=gmem0 depth=accel_config::params_elements
#pragma HLS INTERFACE m_axi port=arena offset=slave bundle=gmem1 depth=accel_config::arena_elements
#pragma HLS INTERFACE m_axi port=input offset=slave bundle=gmem2 depth=accel_config::input_elements
#pragma HLS INTERFACE m_axi port=output offset=slave bundle=gmem2 depth=accel_config::output_elements
#pragma HLS INTERFACE s_axilite port=program bundle=control
#pragma HLS INTERFACE s_axilite port=params bundle=control
#pragma HLS INTERFACE s_axilite port=arena bundle=control
#pragma HLS INTERFACE s_axilite port=input bundle=control
#pragma HLS INTERFACE s_axilite port=output bundle=control
#pragma HLS INTERFACE s_axilite port=return bundle=control
    word_source<accel_config> par(params), in(input);
    word_port<accel_config> mem(arena), out(output);
    program_header hd;
    read_header(program, hd);
    for (int k = 0; k < hd.input_words; ++k) {
        EDGEVIT_TRIPCOUNT(accel_config::input_copy)
#pragma HLS PIPELINE II=1
        mem.put(hd.input_off + k, in.get(k));
    }
    mem.flush();
    for (int n = 0; n < hd.layers; ++n) {
        EDGEVIT_TRIPCOUNT(accel_config::program_layers)
        layer_desc d;
        read_layer(program + HEADER_WORDS + n * DESC_WORDS, d);
        switch (d.op) {
#ifdef EDGEVIT_OP_LINEAR
            case OP_LINEAR: linear_unit<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_DWCONV
            case OP_DWCONV: depthwise_unit<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_ATTENTION
            case OP_ATTENTION: attention_unit<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_LAYERNORM
            case OP_LAYERNORM: layernorm_unit<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_IM2COL
            case OP_IM2COL: im2col<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_UNFOLD
            case OP_UNFOLD: unfold_fold<accel_config>(mem, d, false); break;
#endif
#ifdef EDGEVIT_OP_FOLD
            case OP_FOLD: unfold_fold<accel_config>(mem, d, true); break;
#endif
#ifdef EDGEVIT_OP_CONCAT
            case OP_CONCAT: concat<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_AVGPOOL
            case OP_AVGPOOL: avgpool<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_POOL_MIXER
            case OP_POOL_MIXER: pool_mixer<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_L2NORM
            case OP_L2NORM: l2_normalize<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_ADDITIVE
            case OP_ADDITIVE: additive_attention<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_MOE_ROUTE
            case OP_MOE_ROUTE: moe_route<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_MOE_EXPERTS
            case OP_MOE_EXPERTS: moe_experts<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_ADD
            case OP_ADD: add_tensors<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_TOKEN_ROWS
            case OP_TOKEN_ROWS: token_rows<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_CHANNEL_SCALE
            case OP_CHANNEL_SCALE: channel_scale<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_GLOBAL_NORM
            case OP_GLOBAL_NORM: global_norm<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_SEPARABLE_ATTENTION
            case OP_SEPARABLE_ATTENTION: separable_attention<accel_config>(mem, d); break;
#endif
#ifdef EDGEVIT_OP_QLINEAR
            case OP_QLINEAR: qgemm_unit<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_QAVGPOOL
            case OP_QAVGPOOL: qavgpool<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_QTABLE
            case OP_QTABLE: qtable<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_QDWCONV
            case OP_QDWCONV: qdwconv_unit<accel_config>(par, mem, d); break;
#endif
#ifdef EDGEVIT_OP_QADD
            case OP_QADD: qadd<accel_config>(par, mem, d); break;
#endif
            default: break;
        }
        mem.flush();
    }
    for (int k = 0; k < hd.output_words; ++k) {
        EDGEVIT_TRIPCOUNT(accel_config::output_copy)
#pragma HLS PIPELINE II=1
        out.put(k, mem.get(hd.output_off + k));
    }
    out.flush();
}
