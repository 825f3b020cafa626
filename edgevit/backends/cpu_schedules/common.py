"""What the CPU rules need to know about a target and a PrimFunc's blocks."""

from __future__ import annotations

from dataclasses import dataclass

from tvm import tirx
from tvm.s_tir import Schedule

#: The PrimFunc attribute listing the parameters that are constants of the model (its weights), which a schedule
#: may re-lay out at compile time: TVM's name (MetaSchedule's ``AttachAttrLayoutFreeBuffers``); edgevit's
#: ``weight_packing.MarkWeightParams`` sets it.
LAYOUT_FREE = "layout_free_buffers"


@dataclass(frozen=True)
class CpuInfo:
    """The numbers the rules are driven by."""

    lanes: int        # float32 lanes per vector register
    registers: int    # vector registers (accumulators must fit with room for operands)
    cores: int
    # FMA by vector lane (AArch64 ``fmla v.4s, v.4s, v.s[i]``): a broadcast operand is then best loaded a vector
    # at a time and used lane by lane. x86 has no such FMA but broadcasts from memory for free ({1to16}).
    lane_fma: bool = False

    @staticmethod
    def of(target) -> "CpuInfo":
        """Read vector width and core count from a TVM llvm target (AVX-512, AVX2, NEON, else 128-bit)."""
        attrs = target.attrs
        mcpu = str(attrs.get("mcpu", ""))
        mattr = [str(a) for a in attrs.get("mattr", [])]
        triple = str(attrs.get("mtriple", ""))
        cores = int(attrs.get("num-cores", 0) or 0)
        x86_512 = {"skylake-avx512", "cascadelake", "cooperlake", "icelake-server", "icelake-client",
                   "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids", "graniterapids",
                   "znver4", "znver5", "cannonlake", "alderlake-avx512"}
        if "+avx512f" in mattr or mcpu in x86_512:
            return CpuInfo(16, 32, cores)
        if triple.startswith(("aarch64", "arm64")) or "+neon" in mattr:
            return CpuInfo(4, 32, cores, lane_fma=True)
        if "+avx2" in mattr or mcpu in {"haswell", "broadwell", "skylake", "alderlake", "znver1", "znver2",
                                       "znver3", "raptorlake", "meteorlake"}:
            return CpuInfo(8, 16, cores)
        return CpuInfo(4, 16, cores)


def is_reduction(block: tirx.SBlock) -> bool:
    return any(iv.iter_type == tirx.IterVar.CommReduce for iv in block.iter_vars)


def vars_in(region) -> set:
    """The block iteration variables a buffer region's indices use."""
    return set().union(*[vars_in_range(rng) for rng in region.region])


def vars_in_range(rng) -> set:
    """The variables one index range of a buffer region uses."""
    return {v.name for v in tirx.analysis.undefined_vars(rng.min, [])}


def extent(iv: tirx.IterVar) -> int | None:
    value = iv.dom.extent
    return int(value) if isinstance(value, tirx.IntImm) else None


def extent_of(sch: Schedule, loop) -> int | None:
    value = sch.get(loop).extent
    return int(value) if isinstance(value, tirx.IntImm) else None


def largest_divisor(n: int, limit: int, multiple_of: int = 1) -> int:
    """The largest divisor of ``n`` that is ≤ ``limit``, preferring multiples of ``multiple_of``."""
    best = 1
    for d in range(min(n, limit), 0, -1):
        if n % d == 0:
            if d % multiple_of == 0:
                return d
            best = max(best, d)
    return best


def vector_tile(n: int, lanes: int, limit: int) -> int:
    """A tile of ``n`` that vectorises cleanly: the largest divisor ≤ ``limit`` that is a multiple of ``lanes``,
    else the largest power-of-two divisor ≤ ``lanes`` (odd widths like 20 or 7 make LLVM shuffle and spill)."""
    for d in range(min(n, limit) // lanes * lanes, 0, -lanes):
        if n % d == 0:
            return d
    d = lanes
    while d > 1 and n % d:
        d //= 2
    return d


def inline_injective(sch: Schedule, keep: set) -> None:
    """Inline every root block not named in ``keep`` that can be, last first."""
    for block in reversed(root_blocks(sch)):
        if sch.get(block).name_hint in keep:
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # noqa: BLE001 - not inlinable (several consumers, reduction consumer) is normal
            pass


def root_blocks(sch: Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def schedule_elementwise(sch: Schedule, block, info: CpuInfo, parallel: bool = True) -> None:
    """Vectorise a spatial block's innermost loop and run its outer loops, fused, in parallel.

    The innermost loop alone is vectorised (fusing it with outer loops would turn every lane's index into a
    div/mod): by its largest lane-multiple tile up to 4 vectors. A loop that is no multiple of the vector is
    partitioned into whole vectors and a scalar tail: split with a remainder instead, TVM scalarises the whole
    loop, every lane behind a bounds test (a 3x3 conv's 130-wide padded rows: 40 % of a depthwise conv's time
    went to that copy; partitioned, 128x128 depthwise + SiLU 0.68 -> 0.49 ms on Zen 3). A loop shorter than a
    vector is left to LLVM's loop vectoriser (fusing a 7- or 14-wide map's loops to vectorise them made a
    resize + GELU kernel twice as slow: gathers).
    """
    loops = sch.get_loops(block)
    if not loops:
        return
    inner = loops[-1]
    n = sch.get(inner).extent
    n = int(n) if isinstance(n, tirx.IntImm) else None
    outer = list(loops[:-1])
    if n is not None and n >= info.lanes:
        ragged = n % info.lanes
        if ragged:
            n -= n % info.lanes
            inner, _tail = sch.loop_partition(inner, [n])
        # n is now a multiple of the vector, so its tile is too
        vectors, lanes = sch.split(inner, [None, vector_tile(n, info.lanes, 4 * info.lanes)])
        sch.vectorize(lanes)
        if not ragged:  # the partitions are blocks of their own: their loops do not fuse with the outer ones
            outer.append(vectors)
    if parallel:
        run_in_parallel(sch, outer, info)


def parallel_share(n: int, info: CpuInfo) -> float:
    """The share of a parallel loop of extent ``n`` that its busiest thread runs on the target's cores (2 when
    unknown: the host): TVM hands each thread one static chunk of ceil(n / threads) iterations, so 3 on 2
    threads runs 2 and 1 (2/3: 1.5x, not 2x), and 1 runs on one thread behind a parallel launch."""
    threads = info.cores if info.cores > 1 else 2
    return -(-n // threads) / n


def splits_evenly(n: int, info: CpuInfo) -> bool:
    """Whether a parallel loop of extent ``n`` keeps the cores busy to within 1/8 (:func:`parallel_share`)."""
    threads = info.cores if info.cores > 1 else 2
    return parallel_share(n, info) * threads <= 9 / 8


#: Static work (stores executed, :func:`static_work`) below which a loop nest stays serial. A parallel region
#: costs a launch (waking the other threads and waiting for them; ``parallelism.launch_cost_us``: 4.4-7.9 us
#: on 2 threads at load 5-15 on the 2-core VM, 0.15 us on 1), and SwiftFormer's element-wise kernels on 7x7 and
#: 14x14 maps take 0.22-0.27 ns per store (1-thread CPU time, Xeon, AVX-512): 16384 stores are 4 us, of which
#: 2 threads save at most 2, less than a launch there. Under it: layout copies and scalings on 7x7 and 14x14
#: maps, pooling and means onto 1x1.
PARALLEL_WORK = 16384


def static_work(stmt) -> int:
    """Stores a statement executes: each store times the extents of the loops around it inside ``stmt``
    (a non-constant extent counts once)."""
    if isinstance(stmt, tirx.BufferStore):
        return 1
    if isinstance(stmt, tirx.For):
        n = int(stmt.extent) if isinstance(stmt.extent, tirx.IntImm) else 1
        return n * static_work(stmt.body)
    total = 0
    for name in ("body", "seq", "then_case", "else_case", "block", "init"):
        child = getattr(stmt, name, None)
        if child is None:
            continue
        many = isinstance(child, (list, tuple)) or type(child).__name__ == "Array"
        total += sum(static_work(c) for c in (child if many else [child]) if isinstance(c, tirx.Stmt))
    return total


def run_in_parallel(sch: Schedule, loops: list, info: CpuInfo, work: int | None = None) -> None:
    """Fuse adjacent ``loops`` (outermost first) and run them in parallel, unless the target has one core, they
    have one iteration (a launch for nothing: MobileViTv2's whole-tensor GroupNorm statistics, 21 of its 160
    parallel launches per inference, tools/parallel_report.py) or the nest does less than :data:`PARALLEL_WORK`
    (``work``, default what the fused loop holds now: :func:`static_work`)."""
    if info.cores != 1 and loops:
        loop = sch.fuse(*loops) if len(loops) > 1 else loops[0]
        if extent_of(sch, loop) != 1 and (static_work(sch.get(loop)) if work is None else work) >= PARALLEL_WORK:
            sch.parallel(loop)
