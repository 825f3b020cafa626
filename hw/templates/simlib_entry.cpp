// C entry point of the simulated accelerator (hw/templates/simlib_entry.cpp, built by edgevit.pynq.simlib): the
// buffers are the board's DDR, 16-bit words; edgevit_top works on ap_int<16>, so words are copied in and out
// around the call.
#include <vector>

#include <edgevit/units.h>

#include "config.h"

using namespace edgevit;

void edgevit_top(const int* program, const word_t* params, word_t* arena, const word_t* input, word_t* output);

extern "C" int edgevit_sim_run(const int* program, long program_n, short* params, long params_n, short* arena,
                               long arena_n, short* input, long input_n, short* output, long output_n) {
    if (program_n < HEADER_WORDS) return 1;
    program_header hd;
    read_header(program, hd);
    if (hd.magic != PROGRAM_MAGIC || hd.desc_words != DESC_WORDS || hd.params_words > params_n ||
        hd.arena_words > arena_n || hd.input_words > input_n || hd.output_words > output_n ||
        HEADER_WORDS + (long)hd.layers * DESC_WORDS > program_n)
        return 1;
    std::vector<word_t> p(params, params + params_n), a(arena, arena + arena_n), in(input, input + input_n);
    std::vector<word_t> out(output_n);
    edgevit_top(program, p.data(), a.data(), in.data(), out.data());
    for (long k = 0; k < arena_n; ++k) arena[k] = (short)a[k].to_int();
    for (long k = 0; k < output_n; ++k) output[k] = (short)out[k].to_int();
    return 0;
}
