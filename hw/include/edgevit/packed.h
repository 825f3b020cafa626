// Wide m_axi ports: each buffer of 16-bit words is an array of CFG::AXI_BITS-bit beats (the board's HP port
// width: 128 on the ZCU102, 64 on the PYNQ-Z2), word k in bits [16 (k % WPB), 16 (k % WPB) + 16) of beat
// k / WPB. That is the byte order of a little-endian int16 array, so a driver's buffers are plain int16
// arrays padded to whole beats (regmap.json: alloc_elements).
//
// word_port / word_source give the units word access to such a buffer. A sequential pass reads each beat once
// (the last beat read is kept) and writes each beat once (words are collected until one of another beat comes,
// or flush()); a beat only partly written is merged with its old contents (read-modify-write), which only the
// first and last beat of a run need. Loops that move a whole beat per cycle (the linear unit's tile loads and
// write-back) use beat() / put_beat() directly. Every read sees the words written before it, flushed or not.
#ifndef EDGEVIT_PACKED_H
#define EDGEVIT_PACKED_H

#ifndef __SYNTHESIS__
#include <cstdlib>
#endif

#include "descriptor.h"
#include "fixed.h"
#include "tripcount_product.h"
#include "unit_loops.h"

namespace edgevit {

template <class BEAT>
inline word_t lane_of(const BEAT& b, int l) {
    word_t w;
    w.range(15, 0) = b.range(16 * l + 15, 16 * l);
    return w;
}

template <class BEAT>
inline void set_lane(BEAT& b, int l, word_t w) {
    b.range(16 * l + 15, 16 * l) = w.range(15, 0);
}

// Read-only word access to a parameter buffer (weights, biases, tables of the program).
template <class CFG>
struct word_source {
    typedef typename CFG::beat_t beat_t;
    const beat_t* mem;
    beat_t rd;
    int rb;
    explicit word_source(const beat_t* m) : mem(m), rd(0), rb(-1) {}
    beat_t beat(int b) { return b == rb ? rd : mem[b]; }
    word_t get(int off) {
        const int b = off / CFG::WPB;
        if (b != rb) rd = mem[b], rb = b;
        return lane_of(rd, off % CFG::WPB);
    }
    // A 64-bit parameter (a bias at the accumulator's scale): four little-endian words.
    i64 get_i64(int off) {
        i64 v = 0;
        for (int k = 0; k < 4; ++k) v |= (i64)(unsigned short)get(off + k).to_int() << (16 * k);
        return v;
    }
};

// Read-write word access (the arena, the input and output buffers).
template <class CFG>
struct word_port {
    typedef typename CFG::beat_t beat_t;
    typedef ap_uint<CFG::WPB> lanes_t;
    beat_t* mem;
    beat_t rd, wr;
    int rb, wb;       // the beat held in rd / wr (-1: none)
    lanes_t mask;     // lanes of wr written since the last flush
    explicit word_port(beat_t* m) : mem(m), rd(0), wr(0), rb(-1), wb(-1), mask(0) {}

    // Beat b as it stands, pending words included.
    beat_t beat(int b) {
        beat_t v = b == rb ? rd : mem[b];
        if (b == wb) {
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                if (mask[l]) set_lane(v, l, lane_of(wr, l));
            }
        }
        return v;
    }
    word_t get(int off) {
        const int b = off / CFG::WPB, l = off % CFG::WPB;
        if (b == wb && mask[l]) return lane_of(wr, l);
        if (b != rb) rd = mem[b], rb = b;
        return lane_of(rd, l);
    }
    void put(int off, word_t v) {
        const int b = off / CFG::WPB, l = off % CFG::WPB;
        if (b != wb) {
            flush();
            wb = b;
        }
        set_lane(wr, l, v);
        mask[l] = 1;
        if (b == rb) set_lane(rd, l, v);
    }
    // Writes the lanes set in `lanes` of v into beat b (the others keep their contents).
    void put_beat(int b, beat_t v, lanes_t lanes) {
        if (b == wb) flush();
        if (lanes != lanes_t(-1)) {
            const beat_t old = beat(b);
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                if (!lanes[l]) set_lane(v, l, lane_of(old, l));
            }
        }
        mem[b] = v;
        if (b == rb) rd = v;
    }
    // A whole beat b: no merge, so no read (the linear unit's overlapped write-back, which must not read the
    // port its tile load uses). Pending words of beat b are superseded.
    void put_whole_beat(int b, beat_t v) {
        if (b == wb) wb = -1, mask = 0;
        mem[b] = v;
        if (b == rb) rd = v;
    }
    void flush() {
        if (wb >= 0 && mask != 0) {
            beat_t v = wr;
            if (mask != lanes_t(-1)) {
                const beat_t old = b_read(wb);
                for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                    if (!mask[l]) set_lane(v, l, lane_of(old, l));
                }
            }
            mem[wb] = v;
            if (wb == rb) rd = v;
        }
        wb = -1;
        mask = 0;
    }

   private:
    beat_t b_read(int b) { return b == rb ? rd : mem[b]; }
};

// The words of one output run, in order, collected a beat at a time by a loop that also reads the port: a beat
// is written whole, without a read, when the loop moves on to a later one (to()), so the loop makes one read and
// one write a cycle on the port's two AXI channels. Only the run's first beat (start(), when the run starts
// inside it) and its last (flush()) are merged with their old contents, outside the loop.
template <class CFG>
struct beat_writer {
    typedef typename CFG::beat_t beat_t;
    typedef ap_uint<CFG::WPB> lanes_t;
    beat_t v;
    int b;
    lanes_t mask;   // lanes of beat b already set
    beat_writer() : v(0), b(-1), mask(0) {}
    void start(word_port<CFG>& mem, int off) {
        b = off / CFG::WPB;
        mask = 0;
        if (off % CFG::WPB) {
            v = mem.beat(b);
            for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
                mask[l] = l < off % CFG::WPB;
            }
        }
    }
    // The next words go to beat bb: the beat held so far, every word of it set, leaves whole.
    void to(word_port<CFG>& mem, int bb) {
        if (bb == b) return;
        if (mask != 0) {
#ifndef __SYNTHESIS__
            if (mask != lanes_t(-1)) std::abort();   // a partial beat would need a read in the loop
#endif
            mem.put_whole_beat(b, v);
        }
        b = bb;
        mask = 0;
    }
    void set(int l, word_t w) {
        set_lane(v, l, w);
        mask[l] = 1;
    }
    void flush(word_port<CFG>& mem) {
        if (mask != 0) mem.put_beat(b, v, mask);
        mask = 0;
    }
};

// Beats of each row's pass in the units that walk [M][C] rows a beat at a time in one loop (a fixed count, so
// that the loop's trip is M times it): C / WPB when the rows are whole beats and the tensors start on beats,
// else the most beats a run of C words can span.
template <class CFG>
inline int row_pass_beats(bool aligned, int C) {
    return aligned && C % CFG::WPB == 0 ? C / CFG::WPB : (C + CFG::WPB - 2) / CFG::WPB + 1;
}

// Word k of row m of a tile: as written (the linear unit's input tile, the depthwise weights), or rows in pairs
// (the linear unit's weight tile, w [LO / 2][KMAX][2]).
template <int N>
inline void tile_put(word_t (*dst)[N], int m, int k, word_t v) {
    dst[m][k] = v;
}

template <int N>
inline void tile_put(word_t (*dst)[N][2], int m, int k, word_t v) {
    dst[m >> 1][k][m & 1] = v;
}

// Words [start, start + rows * K) of a buffer into rows [0, rows) of a tile: one pipelined pass over the beats
// that hold them (one m_axi request stream), WPB words a cycle. The lanes of a beat go to consecutive positions
// (k wraps to the next row at K), so the tile needs WPB banks on its k dimension (the linear unit partitions it
// by max(LI, WPB); the depthwise weights are registers).
template <class CFG, class PORT, class WORDS, class TILE>
void load_rows(PORT& mem, int start, int rows, int K, TILE dst) {
    typedef tripcount_beats<WORDS, CFG::WPB> beats_trip;
    const int first = start / CFG::WPB, beats = (start + rows * K - 1) / CFG::WPB - first + 1;
    int m = 0, k = -(start % CFG::WPB);   // row and column of the beat's lane 0
#ifndef __SYNTHESIS__
    unit_loop_note(beats);
#endif
    for (int i = 0; i < beats; ++i) {
        EDGEVIT_TRIPCOUNT(beats_trip)
#pragma HLS PIPELINE II=1
        const typename CFG::beat_t v = mem.beat(first + i);
        for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
            if (k >= 0 && m < rows) tile_put(dst, m, k, lane_of(v, l));
            if (++k == K) {
                k = 0;
                ++m;
            }
        }
    }
}

// The 64-bit biases of rows [0, rows) from words [start, start + 4 rows) (four little-endian words each) into
// bias[0..rows), the other lanes zero; start < 0: no biases, all zero. One pipelined pass over their beats.
template <class CFG, int N>
void load_biases(word_source<CFG>& params, int start, int rows, i64 bias[N]) {
    typedef tripcount_beats<tripcount<4, 4 * N, 4 * N>, CFG::WPB> bias_beats;
    for (int l = 0; l < N; ++l) {
#pragma HLS UNROLL
        bias[l] = 0;
    }
    if (start < 0) return;
    const int first = start / CFG::WPB, beats = (start + 4 * rows - 1) / CFG::WPB - first + 1;
    int i = -(start % CFG::WPB);   // bias word of the beat's lane 0
#ifndef __SYNTHESIS__
    unit_loop_note(beats);
#endif
    for (int b = 0; b < beats; ++b) {
        EDGEVIT_TRIPCOUNT(bias_beats)
#pragma HLS PIPELINE II=1
        const typename CFG::beat_t v = params.beat(first + b);
        for (int l = 0; l < CFG::WPB; ++l) {
#pragma HLS UNROLL
            if (i + l >= 0 && i + l < 4 * rows)
                bias[(i + l) >> 2] |= (i64)(unsigned short)lane_of(v, l).to_int() << (16 * ((i + l) & 3));
        }
        i += CFG::WPB;
    }
}

// The LD words of a pixel's channel group (the depthwise unit): words [off, off + n) into out[0..n) (n <= LD),
// from the at most (LD + WPB - 2) / WPB + 1 beats that hold them, in one step (unrolled).
template <class CFG, class PORT>
void read_lanes(PORT& mem, int off, int n, word_t out[CFG::LD]) {
    typename CFG::beat_t b[(CFG::LD + CFG::WPB - 2) / CFG::WPB + 1];
#pragma HLS ARRAY_PARTITION variable=b complete
    const int first = off / CFG::WPB, sh = off % CFG::WPB;
    for (int j = 0; j < (CFG::LD + CFG::WPB - 2) / CFG::WPB + 1; ++j) {
#pragma HLS UNROLL
        b[j] = (first + j) * CFG::WPB < off + n ? mem.beat(first + j) : typename CFG::beat_t(0);
    }
    for (int l = 0; l < CFG::LD; ++l) {
#pragma HLS UNROLL
        out[l] = lane_of(b[(sh + l) / CFG::WPB], (sh + l) % CFG::WPB);
    }
}

// in[0..n) to words [off, off + n) (n <= LD): at most (LD + WPB - 2) / WPB + 1 beat writes, the other words
// of a beat kept.
template <class CFG>
void write_lanes(word_port<CFG>& mem, int off, int n, const word_t in[CFG::LD]) {
    const int first = off / CFG::WPB, sh = off % CFG::WPB;
    for (int j = 0; j < (CFG::LD + CFG::WPB - 2) / CFG::WPB + 1; ++j) {
#pragma HLS UNROLL
        typename CFG::beat_t v = 0;
        ap_uint<CFG::WPB> lanes = 0;
        for (int g = 0; g < CFG::WPB; ++g) {
#pragma HLS UNROLL
            const int l = j * CFG::WPB + g - sh;
            if (l >= 0 && l < n) {
                set_lane(v, g, in[l < CFG::LD ? l : 0]);
                lanes[g] = 1;
            }
        }
        if (lanes != 0) mem.put_beat(first + j, v, lanes);
    }
}

}  // namespace edgevit

#endif
