// The edgevit unit library: the runtime-configured units a generated top() dispatches layer descriptors to.
#ifndef EDGEVIT_UNITS_H
#define EDGEVIT_UNITS_H

#include "activation.h"
#include "attention.h"
#include "conv.h"
#include "descriptor.h"
#include "fixed.h"
#include "fixed_math.h"
#include "layernorm.h"
#include "layout.h"
#include "linear.h"
#include "moe.h"
#include "packed.h"
#include "qlinear.h"
#include "stream.h"
#include "token_mixers.h"

#endif
