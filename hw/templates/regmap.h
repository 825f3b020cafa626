// AXI-lite register offsets and buffer sizes (elements) of edgevit_top (generated from hw/templates/regmap.h).
#ifndef REGMAP_H
#define REGMAP_H
{{registers}}
{{buffers}}
#endif
