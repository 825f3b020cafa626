// The edgevit HLS kernel library (include this one header).
#ifndef EDGEVIT_KERNELS_H
#define EDGEVIT_KERNELS_H

#include "activation.h"
#include "attention.h"
#include "conv.h"
#include "fixed.h"
#include "layernorm.h"
#include "layout.h"
#include "linear.h"
#include "fixed_math.h"
#include "stream.h"
#include "token_mixers.h"

#endif
