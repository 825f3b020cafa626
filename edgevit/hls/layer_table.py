"""The layer program as the accelerator reads it: an arena layout, packed parameters and a descriptor table.

:func:`build` turns a calibrated :class:`~edgevit.hls.program.Program` into a :class:`LayerTable`: every tensor
gets an offset in one activation arena of 16-bit words (in DDR), every parameter an offset in one parameter
buffer of 16-bit words (64-bit biases take four), and every layer one descriptor of 32-bit words that tells
``top()`` which unit to run, on which offsets, with which dimensions, formats and epilogue.
``FIELDS``/``HEADER`` and ``OPS`` must match ``hw/include/edgevit/descriptor.h`` (a test parses it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .ops import CODES, KINDS, TILE_TOKENS, linear_traffic, weights_outer  # noqa: F401 (re-exported)
from .program import Program

OPS = CODES   # kind -> descriptor op code, from the registry (ops.KINDS)
ACTS = {"none": 0, "relu": 1, "gelu": 2, "silu": 3, "hswish": 4, "sigmoid": 5}
HEADER = ("magic", "version", "layers", "desc_words", "arena_words", "params_words", "input_off", "input_words",
          "output_off", "output_words", "input_frac", "output_frac", "input_width", "output_width")
FIELDS = ("op", "act", "x", "x2", "y", "w", "w2", "b", "d0", "d1", "d2", "d3", "d4", "d5",
          "fx", "fx2", "fw", "fo", "wo", "fl", "wl", "eps_lo", "eps_hi")
MAGIC = 0x54495645   # "EVIT"
VERSION = 1
WORD_BITS = 16       # arena and parameter storage
# Arena tensors start on a 512-bit boundary (the widest AXI port): any two tensors then sit at the same lane of
# their beats, so a unit reads a residual beat for beat with its output (linear.h).
TENSOR_ALIGN = 32


@dataclass
class LayerTable:
    """``header`` and ``descriptors`` (dicts over ``HEADER``/``FIELDS``), ``params`` (int16 words),
    ``tensors`` (name -> (arena offset, words)) and ``names`` (the layer of each descriptor)."""

    header: dict
    descriptors: list
    params: np.ndarray
    tensors: dict
    names: list

    def to_bytes(self) -> bytes:
        """``program.bin``: the header then the descriptors, little-endian int32."""
        words = [self.header[k] for k in HEADER] + [d[k] for d in self.descriptors for k in FIELDS]
        return np.asarray(words, "<i4").tobytes()

    def to_json(self) -> dict:
        """The readable form of ``program.bin`` (plus the tensor and layer names it does not carry)."""
        inv = {v: k for k, v in OPS.items()}
        acts = {v: k for k, v in ACTS.items()}
        layers = [{"layer": n, **d, "op": inv[d["op"]], "act": acts[d["act"]]}
                  for n, d in zip(self.names, self.descriptors)]
        return {"header": self.header, "tensors": {k: list(v) for k, v in self.tensors.items()}, "layers": layers}


def parse(data: bytes) -> tuple[dict, list]:
    """The inverse of :meth:`LayerTable.to_bytes`: (header, descriptors)."""
    words = np.frombuffer(data, "<i4").tolist()
    header = dict(zip(HEADER, words[:len(HEADER)]))
    if header["magic"] != MAGIC or header["desc_words"] != len(FIELDS):
        raise InputError("not an edgevit layer program (bad magic or descriptor size): regenerate the project")
    body = words[len(HEADER):]
    return header, [dict(zip(FIELDS, body[k:k + len(FIELDS)])) for k in range(0, len(body), len(FIELDS))]


def _check_width(name: str, fmt, limit: int) -> None:
    if fmt.w > limit:
        raise InputError(f"{name} is {fmt.w} bits wide but the accelerator stores at most {limit}-bit words: "
                         f"use --format {name}=16,I")


def build(prog: Program) -> LayerTable:
    """Lay out ``prog`` (calibrated) in the arena and parameter buffer and describe each layer."""
    scratch = {l.output: moe_scratch_words(prog, l) for l in prog.layers if l.kind == "moe_experts"}
    tensors, off = {}, 0
    for name, shape in prog.shapes.items():
        size = int(np.prod(shape))
        _check_width(name, prog.formats[name], WORD_BITS)
        off = -(-off // TENSOR_ALIGN) * TENSOR_ALIGN
        tensors[name] = (off, size)
        off += size + scratch.get(name, 0)   # an MoE unit's scratch follows its output
    arena_words = off
    chunks, poff = [], 0

    def put_words(words):
        nonlocal poff
        chunks.append(words)
        start, poff = poff, poff + words.size
        return start

    def put(raw, fmt, name):
        if name.endswith(".b"):    # 64-bit bias: four little-endian words
            return put_words(np.asarray(raw, "<i8").ravel().view("<i2"))
        _check_width(name, fmt, WORD_BITS)
        return put_words(np.asarray(raw, np.int64).ravel().astype("<i2"))

    descriptors, f = [], prog.formats
    for layer in prog.layers:
        d = dict.fromkeys(FIELDS, 0)
        d.update(x2=-1, w=-1, w2=-1, b=-1)
        a, k = layer.attrs, layer.kind
        d["op"], d["act"] = OPS[k], ACTS[a.get("act", "none")]
        d["x"], d["y"] = tensors[layer.inputs[0]][0], tensors[layer.output][0]
        fo = f[layer.output]
        d.update(fx=f[layer.inputs[0]].frac, fo=fo.frac, wo=fo.w)
        if len(layer.inputs) > 1:
            d["x2"], d["fx2"] = tensors[layer.inputs[1]][0], f[layer.inputs[1]].frac
        q = prog.quantized_params(layer)
        slots = {"w": "w", "gamma": "w", "scale": "w", "wg": "w", "pos": "w", "tok": "w", "beta": "w2", "b": "b",
                 "rq": "w2"}   # rq: int8 requantization records (requant.h)
        if k == "moe_experts":   # expert blocks packed together; hidden activations in the arena scratch
            _check_width(f"{layer.name}.w", q["w1"][1], WORD_BITS)
            _check_width(layer.name + ".hidden", f[layer.name + ".hidden"], WORD_BITS)
            d["w"], d["fw"] = put_words(expert_blocks(q)), q["w1"][1].frac
            q = {}
        for key, (raw, fmt) in q.items():
            d[slots[key]] = put(raw, fmt, f"{layer.name}.{key}")
            if key != "b" and key != "beta":
                d["fw"] = fmt.frac
        d.update({f"d{n}": int(v) for n, v in enumerate(KINDS[k].dims(prog, layer))}, **KINDS[k].fields(prog, layer))
        descriptors.append(d)
    fi, fout = f[prog.input], f[prog.output]
    header = {"magic": MAGIC, "version": VERSION, "layers": len(descriptors), "desc_words": len(FIELDS),
              "arena_words": arena_words, "params_words": poff,
              "input_off": tensors[prog.input][0], "input_words": tensors[prog.input][1],
              "output_off": tensors[prog.output][0], "output_words": tensors[prog.output][1],
              "input_frac": fi.frac, "output_frac": fout.frac, "input_width": fi.w, "output_width": fout.w}
    params = np.concatenate(chunks) if chunks else np.zeros(0, "<i2")
    return LayerTable(header, descriptors, params, tensors, [l.name for l in prog.layers])


def expert_words(d: int, h: int) -> int:
    """Words of one expert's parameter block (``moe.h``): fc1 [H][D], fc2 [D][H], 64-bit biases b1 [H], b2 [D]."""
    return 2 * h * d + 4 * (h + d)


def expert_blocks(q: dict) -> np.ndarray:
    """An MoE layer's quantised experts packed as consecutive :func:`expert_words` blocks of int16 words."""
    blocks = []
    for e in range(len(q["w1"][0])):
        blocks += [np.asarray(q["w1"][0][e], np.int64).ravel().astype("<i2"),
                   np.asarray(q["w2"][0][e], np.int64).ravel().astype("<i2"),
                   np.asarray(q["b1"][0][e], "<i8").view("<i2"), np.asarray(q["b2"][0][e], "<i8").view("<i2")]
    return np.concatenate(blocks)


def moe_scratch_words(prog: Program, layer) -> int:
    """Arena words an MoE unit uses after its output: gathered tokens [N][D], hidden [N][H], expert outputs."""
    _, h, d = layer.params["w1"].shape
    n = int(np.prod(prog.shapes[layer.inputs[0]][:-1]))
    return n * (2 * d + h)


def unit_bounds(prog: Program) -> dict:
    """The compile-time sizes of the units' on-chip buffers: the largest value each takes in ``prog``."""
    def most(kind, fn):
        return max([int(fn(l)) for l in prog.layers if l.kind == kind] + [1])

    def ishape(l):
        return prog.shapes[l.inputs[0]]

    def moe(fn):
        return most("moe_experts", lambda l: fn(*l.params["w1"].shape, int(np.prod(ishape(l)[:-1]))))

    return {"TM": TILE_TOKENS,
            "KMAX": max(most("linear", lambda l: ishape(l)[-1]), most("qlinear", lambda l: ishape(l)[-1]),
                        moe(lambda e, h, d, n: max(h, d))),
            "KMAXDW": max(most(kind, lambda l: l.attrs["k"]) for kind in ("dwconv", "qdwconv")),
            "WMAX": max(most(kind, lambda l: ishape(l)[1]) for kind in ("dwconv", "qdwconv")),
            "NMAX": most("attention", lambda l: ishape(l)[1]),
            "DHMAX": most("attention", lambda l: ishape(l)[2] // 3 // l.attrs["heads"]),
            "CMAX": most("layernorm", lambda l: ishape(l)[-1]),
            "L2MAX": most("l2norm", lambda l: ishape(l)[-1]),
            "PCMAX": most("pool_mixer", lambda l: ishape(l)[-1]),
            "TMAX": most("additive", lambda l: np.prod(ishape(l)[:-1])),
            "DMAX": most("additive", lambda l: ishape(l)[-1]),
            "SNMAX": most("separable_attention", lambda l: ishape(l)[1]),
            "SDMAX": most("separable_attention", lambda l: ishape(l)[-1] - 1),
            "EMAX": max(most("moe_route", lambda l: ishape(l)[-1]), moe(lambda e, h, d, n: e)),
            "MNMAX": moe(lambda e, h, d, n: n), "MDMAX": moe(lambda e, h, d, n: d),
            "EWMAX": moe(lambda e, h, d, n: expert_words(d, h))}
