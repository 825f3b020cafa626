// C-simulation only: the pipelined loops each linear_unit, depthwise_unit, im2col, layernorm_unit, l2_normalize,
// additive_attention, attention_unit, concat, unfold_fold and qgemm_unit call runs, so that a test can hold the estimator's loop model to the C++ as
// written. Per call, the iterations of all its pipelined loops and how many loops ran (at least one iteration),
// written as two longs to slots[2 pos] when the testbench has set slots (cap calls).
#ifndef EDGEVIT_UNIT_LOOPS_H
#define EDGEVIT_UNIT_LOOPS_H

namespace edgevit {

#ifndef __SYNTHESIS__
struct unit_loop_log {
    long* slots;
    int pos, cap;
    long trips, loops;
};
inline unit_loop_log& unit_loops() { static unit_loop_log g = {0, 0, 0, 0, 0}; return g; }
inline void unit_loop_begin() { unit_loops().trips = unit_loops().loops = 0; }
inline void unit_loop_note(int trip) {
    if (trip > 0) unit_loops().trips += trip, ++unit_loops().loops;
}
inline void unit_loop_end() {
    unit_loop_log& g = unit_loops();
    if (g.slots && g.pos < g.cap) g.slots[2 * g.pos] = g.trips, g.slots[2 * g.pos + 1] = g.loops, ++g.pos;
}
// a call that runs one pipelined loop of `trip` iterations (the data movers)
inline void unit_loop_single(int trip) {
    unit_loop_begin();
    unit_loop_note(trip);
    unit_loop_end();
}
#endif

}  // namespace edgevit

#endif
