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

#include "fixed.h"

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

}  // namespace edgevit

#endif
