// Host side of the wide ports (testbench, simulated board): int16 arrays <-> arrays of AXI_BITS-bit beats, in
// the layout of packed.h (word k in lane k % WPB of beat k / WPB; the last beat padded with zeros). Not part of
// the accelerator.
#ifndef EDGEVIT_BEATS_HOST_H
#define EDGEVIT_BEATS_HOST_H

#include <vector>

#include "packed.h"

namespace edgevit {

template <class CFG>
std::vector<typename CFG::beat_t> to_beats(const short* words, long n) {
    std::vector<typename CFG::beat_t> beats((n + CFG::WPB - 1) / CFG::WPB + (n == 0), typename CFG::beat_t(0));
    for (long k = 0; k < n; ++k) set_lane(beats[k / CFG::WPB], (int)(k % CFG::WPB), word_t(words[k]));
    return beats;
}

template <class CFG>
void from_beats(const std::vector<typename CFG::beat_t>& beats, short* words, long n) {
    for (long k = 0; k < n; ++k) words[k] = (short)lane_of(beats[k / CFG::WPB], (int)(k % CFG::WPB)).to_int();
}

}  // namespace edgevit

#endif
