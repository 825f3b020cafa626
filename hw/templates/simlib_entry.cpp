// C entry point of the simulated accelerator (hw/templates/simlib_entry.cpp, built by edgevit.pynq.simlib): the
// buffers are the board's DDR, int16 arrays padded to whole beats; edgevit_top reads them as AXI_BITS-bit beats
// (the same bytes, packed.h), so words are packed before the call and unpacked after it.
#include <vector>

#include <edgevit/beats_host.h>
#include <edgevit/units.h>

#include "config.h"

using namespace edgevit;

typedef accel_config::beat_t beat_t;

void edgevit_top(const int* program, const beat_t* params, beat_t* arena, const beat_t* input, beat_t* output);

extern "C" int edgevit_sim_run(const int* program, long program_n, short* params, long params_n, short* arena,
                               long arena_n, short* input, long input_n, short* output, long output_n) {
    if (program_n < HEADER_WORDS) return 1;
    program_header hd;
    read_header(program, hd);
    if (hd.magic != PROGRAM_MAGIC || hd.desc_words != DESC_WORDS || hd.params_words > params_n ||
        hd.arena_words > arena_n || hd.input_words > input_n || hd.output_words > output_n ||
        HEADER_WORDS + (long)hd.layers * DESC_WORDS > program_n)
        return 1;
    const std::vector<beat_t> p = to_beats<accel_config>(params, params_n), in = to_beats<accel_config>(input, input_n);
    std::vector<beat_t> a = to_beats<accel_config>(arena, arena_n), out = to_beats<accel_config>(output, output_n);
    edgevit_top(program, p.data(), a.data(), in.data(), out.data());
    from_beats<accel_config>(a, arena, arena_n);
    from_beats<accel_config>(out, output, output_n);
    return 0;
}
