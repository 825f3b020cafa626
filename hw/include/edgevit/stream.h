// A FIFO between pipeline stages, our stand-in for hls::stream in C-simulation.
// Same read()/write()/empty() interface, so a synthesis build can alias it to hls::stream without touching
// kernels. Reading an empty stream is a deadlock in hardware; here it aborts so the testbench shows the bug.
#ifndef EDGEVIT_STREAM_H
#define EDGEVIT_STREAM_H

#include <cstdio>
#include <cstdlib>
#include <deque>

namespace edgevit {

template <class T>
class stream {
  public:
    void write(const T& v) { fifo_.push_back(v); }
    T read() {
        if (fifo_.empty()) {
            std::fprintf(stderr, "edgevit::stream: read from an empty stream (a hardware deadlock)\n");
            std::abort();
        }
        T v = fifo_.front();
        fifo_.pop_front();
        return v;
    }
    bool empty() const { return fifo_.empty(); }
    int size() const { return (int)fifo_.size(); }

  private:
    std::deque<T> fifo_;
};

}  // namespace edgevit

#endif
