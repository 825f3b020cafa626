// C-simulation testbench (written by edgevit hls from hw/templates/tb.cpp): runs every input of
// testdata/inputs.bin through edgevit_top, writes testdata/outputs.bin, and compares with testdata/golden.bin
// (bit for bit) and testdata/reference.bin (float64 model). With the argument "dump" it also writes the whole
// arena after each input (testdata/arenas.bin), the attention schedule (testdata/trace.bin), the expert
// weight words read per MoE layer and expert (testdata/moe_reads.bin) and, per linear_unit, depthwise_unit,
// im2col, unfold_fold, concat, attention_unit, layernorm_unit, l2_normalize, additive_attention and qgemm_unit
// call, the iterations of its pipelined loops and how many ran (testdata/unit_loops.bin). Exit 1 on any mismatch.
#include <cmath>
#include <cstdio>
#include <vector>

#include <edgevit/beats_host.h>
#include <edgevit/units.h>

#include "config.h"

using namespace edgevit;

typedef accel_config::beat_t beat_t;

void edgevit_top(const int* program, const beat_t* params, beat_t* arena, const beat_t* input, beat_t* output);

template <class T>
static std::vector<T> read_all(const char* path) {
    std::vector<T> v;
    FILE* f = std::fopen(path, "rb");
    if (!f) return v;
    std::fseek(f, 0, SEEK_END);
    long n = std::ftell(f) / (long)sizeof(T);
    std::fseek(f, 0, SEEK_SET);
    v.resize(n);
    if (std::fread(v.data(), sizeof(T), n, f) != (size_t)n) v.clear();
    std::fclose(f);
    return v;
}

template <class T>
static void write_all(FILE* f, const std::vector<T>& v) { std::fwrite(v.data(), sizeof(T), v.size(), f); }

int main(int argc, char** argv) {
    const bool dump = argc > 1;
    std::vector<int> program = read_all<int>("program.bin");
    const std::vector<short> params16 = read_all<short>("params.bin");
    const std::vector<beat_t> params = to_beats<accel_config>(params16.data(), (long)params16.size());
    std::vector<short> inputs = read_all<short>("testdata/inputs.bin"), golden = read_all<short>("testdata/golden.bin");
    std::vector<double> reference = read_all<double>("testdata/reference.bin");
    program_header hd;
    if (program.size() < (size_t)HEADER_WORDS) { std::fprintf(stderr, "cannot read program.bin\n"); return 2; }
    read_header(program.data(), hd);
    if (hd.magic != PROGRAM_MAGIC || hd.desc_words != DESC_WORDS) {
        std::fprintf(stderr, "program.bin is not a layer program of this version\n");
        return 2;
    }
    int traced = 0, expert_slots = 0, unit_calls = 0;
    for (int n = 0; n < hd.layers; ++n) {
        layer_desc d;
        read_layer(program.data() + HEADER_WORDS + n * DESC_WORDS, d);
        if (d.op == OP_ATTENTION) traced += d.d0 * d.d1 * d.d2;
        if (d.op == OP_MOE_EXPERTS) expert_slots += d.d3, unit_calls += 2 * d.d0 * d.d4;   // at most a run a pair
        if (d.op == OP_LINEAR || d.op == OP_DWCONV || d.op == OP_QDWCONV || d.op == OP_IM2COL || d.op == OP_L2NORM ||
            d.op == OP_ADDITIVE || d.op == OP_LAYERNORM || d.op == OP_QLINEAR || d.op == OP_UNFOLD ||
            d.op == OP_FOLD || d.op == OP_CONCAT || d.op == OP_ATTENTION)
            ++unit_calls;
    }
    const int count = (int)(inputs.size() / hd.input_words);
    // The m_axi buffers as the board holds them: beats of AXI_BITS bits (the arena starts zeroed, as the driver
    // leaves it).
    const int wpb = accel_config::WPB;
    std::vector<beat_t> arena((hd.arena_words + wpb - 1) / wpb, beat_t(0)), output((hd.output_words + wpb - 1) / wpb);
    std::vector<short> out16(hd.output_words), arena16(hd.arena_words);
    std::vector<int> trace(traced);
    std::vector<long> reads(expert_slots), loops(2 * unit_calls);
    FILE* fout = std::fopen("testdata/outputs.bin", "wb");
    FILE* farena = dump ? std::fopen("testdata/arenas.bin", "wb") : 0;
    FILE* ftrace = dump ? std::fopen("testdata/trace.bin", "wb") : 0;
    FILE* freads = dump ? std::fopen("testdata/moe_reads.bin", "wb") : 0;
    FILE* floops = dump ? std::fopen("testdata/unit_loops.bin", "wb") : 0;
    long mismatches = 0;
    int agree = 0;
    double max_err = 0;
    for (int i = 0; i < count; ++i) {
        const std::vector<beat_t> input =
            to_beats<accel_config>(inputs.data() + (size_t)i * hd.input_words, hd.input_words);
        attention_trace() = trace.data();
        attention_trace_pos() = 0;
        for (size_t k = 0; k < reads.size(); ++k) reads[k] = 0;
        moe_weight_reads() = reads.data();
        moe_weight_reads_pos() = 0;
        for (size_t k = 0; k < loops.size(); ++k) loops[k] = 0;
        unit_loops().slots = loops.data();
        unit_loops().pos = 0;
        unit_loops().cap = unit_calls;
        edgevit_top(program.data(), params.data(), arena.data(), input.data(), output.data());
        from_beats<accel_config>(output, out16.data(), hd.output_words);
        int best = 0, best_ref = 0;
        for (int k = 0; k < hd.output_words; ++k) {
            const size_t at = (size_t)i * hd.output_words + k;
            if (!golden.empty() && out16[k] != golden[at]) ++mismatches;
            if (!reference.empty()) {
                double got = std::ldexp((double)out16[k], -hd.output_frac);
                max_err = std::fmax(max_err, std::fabs(got - reference[at]));
                if (out16[k] > out16[best]) best = k;
                if (reference[at] > reference[(size_t)i * hd.output_words + best_ref]) best_ref = k;
            }
        }
        agree += best == best_ref;
        write_all(fout, out16);
        if (dump) {
            from_beats<accel_config>(arena, arena16.data(), hd.arena_words);
            write_all(farena, arena16);
            write_all(ftrace, trace);
            write_all(freads, reads);
            write_all(floops, loops);
        }
    }
    std::fclose(fout);
    if (farena) std::fclose(farena);
    if (ftrace) std::fclose(ftrace);
    if (freads) std::fclose(freads);
    if (floops) std::fclose(floops);
    std::printf("%d inputs simulated: %ld mismatches against the golden model%s", count, mismatches,
                golden.empty() ? " (no golden.bin)" : "");
    if (!reference.empty())
        std::printf("; max |error| vs float %.4g, argmax agreement %.1f %%", max_err,
                    count ? 100.0 * agree / count : 0.0);
    std::printf("\n");
    return mismatches ? 1 : 0;
}
