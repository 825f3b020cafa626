// Stub of Vitis HLS's <hls_stream.h> for edgevit's synthesis-mode check (edgevit/hls/synth_check.py): only
// the declarations synthesis provides - hls::stream<T, DEPTH> with read, write, empty and full - and no
// bodies, so the check compiles what Vitis would see without pretending to simulate it. Written for
// edgevit, not taken from Xilinx's header.
#ifndef EDGEVIT_STUB_HLS_STREAM_H
#define EDGEVIT_STUB_HLS_STREAM_H

namespace hls {

template <class T, int DEPTH = 2>
class stream {
  public:
    stream();
    T read();
    void read(T& v);
    void write(const T& v);
    bool empty() const;
    bool full() const;
};

}  // namespace hls

#endif
