// A FIFO between pipeline stages: hls::stream<T, DEPTH> in synthesis, a bounded ring buffer in C-simulation.
// The stand-in has the hardware's depth semantics: DEPTH slots, no growth. Reading an empty stream or writing a
// full one stalls forever in hardware (a deadlock); here it aborts with a message, so the testbench shows the
// bug instead of C-simulation silently buffering more than the FIFO can hold.
#ifndef EDGEVIT_STREAM_H
#define EDGEVIT_STREAM_H

#ifdef __SYNTHESIS__
#include <hls_stream.h>
#else
#include <cstdio>
#include <cstdlib>
#endif

namespace edgevit {

#ifdef __SYNTHESIS__

template <class T, int DEPTH>
using stream = hls::stream<T, DEPTH>;

#else

template <class T, int DEPTH>
class stream {
  public:
    stream() : head_(0), count_(0) {}

    void write(const T& v) {
        if (count_ == DEPTH) fail("write to a full stream");
        slots_[(head_ + count_) % DEPTH] = v;
        ++count_;
    }

    T read() {
        if (count_ == 0) fail("read from an empty stream");
        T v = slots_[head_];
        head_ = (head_ + 1) % DEPTH;
        --count_;
        return v;
    }

    bool empty() const { return count_ == 0; }
    bool full() const { return count_ == DEPTH; }
    int size() const { return count_; }

  private:
    static void fail(const char* what) {
        std::fprintf(stderr, "edgevit::stream<depth %d>: %s (a hardware deadlock)\n", DEPTH, what);
        std::abort();
    }

    T slots_[DEPTH];
    int head_, count_;
};

#endif

}  // namespace edgevit

#endif
