// Trip counts of a loop that walks two descriptor-bounded loops as one (a flattened load or store: one
// pipelined loop, hence one m_axi burst sequence, instead of one per row). Min and max multiply exactly; the
// average is the product of the averages, an estimate for Vitis's latency report only.
#ifndef EDGEVIT_TRIPCOUNT_PRODUCT_H
#define EDGEVIT_TRIPCOUNT_PRODUCT_H

#include "descriptor.h"

namespace edgevit {

template <class A, class B>
struct tripcount_product {
    static const int min = A::min * B::min, max = A::max * B::max, avg = A::avg * B::avg;
};

// A compile-time count (lanes) as a trip count, to multiply with a descriptor-bounded one.
template <int N>
struct tripcount_const {
    static const int min = N, max = N, avg = N;
};

// Beats of a run of T words over a port of W words a beat (one more when the run does not start on a beat).
template <class T, int W>
struct tripcount_beats {
    static const int min = (T::min + W - 1) / W, max = T::max / W + 1, avg = T::avg / W + 1;
};

}  // namespace edgevit

#endif
