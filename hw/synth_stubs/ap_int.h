// <ap_int.h> for edgevit's synthesis-mode check (edgevit/hls/synth_check.py). Vitis brings its own ap_int.h;
// the open-source copy used here (hls4ml's ap_types, Apache-2.0) stops with #error under __SYNTHESIS__, so it
// is included with that macro lifted for its duration: edgevit's code still compiles in synthesis mode
// against the real ap_int interface.
#ifndef EDGEVIT_STUB_AP_INT_H
#define EDGEVIT_STUB_AP_INT_H

#pragma push_macro("__SYNTHESIS__")
#undef __SYNTHESIS__
#include_next <ap_int.h>
#pragma pop_macro("__SYNTHESIS__")

#endif
