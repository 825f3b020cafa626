"""Synthesis-mode check of a generated HLS project: does what Vitis HLS would read stay in its synthesizable subset?

No Vitis here, so two stand-ins, both on the project's own sources (``top.cpp``, ``config.h``, ``include/``):

1. **Compile in synthesis mode**: g++ ``-fsyntax-only -D__SYNTHESIS__`` against stub vendor headers
   (``hw/synth_stubs``: ``hls_stream.h`` declaring only ``hls::stream`` read/write/empty/full, ``ap_int.h``
   forwarding to the Apache-2.0 ap_types), so every ``#ifdef __SYNTHESIS__`` branch is compiled, every unit
   template instantiated with the project's ``accel_config``, and every loop trip count name resolved
   (``EDGEVIT_CHECK_TRIPCOUNTS`` turns each ``EDGEVIT_TRIPCOUNT`` into a ``static_assert``).
2. **Static scan with libclang** of every function reachable from ``edgevit_top`` (template instantiations
   included; vendor headers are trusted and not entered) for ``new``/``delete``, ``malloc``-family calls,
   standard containers, recursion, and loops that have neither a constant bound nor a ``LOOP_TRIPCOUNT``.
   A constant bound is a ``for`` whose condition compares its own loop variable with compile-time constants
   (literals, template parameters, ``static const`` members such as ``accel_config::LO``, enumerators);
   ``while`` and ``do`` loops always need a trip count. A loop under ``#pragma HLS PIPELINE`` must have only
   constant-bound loops inside it (and inside what it calls): pipelining unrolls them. A pragma's
   ``variable=`` must name a variable of its function, and every ``#pragma HLS`` a Vitis directive (g++
   silently ignores misspelt ones).

It also checks that ``edgevit_top``'s INTERFACE pragmas and parameters match ``regmap.json`` (the register map
the PYNQ driver programs): one m_axi port per buffer, each address in the ``control`` s_axilite bundle, in
register order.

Each violation names ``file:line``. Run ``python -m edgevit.hls.synth_check PROJECT...``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgevitError, InputError, ToolMissingError, VerificationError
from ..settings import data_path
from .csim import ap_types_dir, compiler
from .ops import UNITS

STUBS = data_path("hw", "synth_stubs")
TOP = "edgevit_top"
CXXFLAGS = ["-std=c++14", "-D__SYNTHESIS__", "-DEDGEVIT_CHECK_TRIPCOUNTS"]
ALLOCATORS = {"malloc", "calloc", "realloc", "free", "aligned_alloc", "posix_memalign", "alloca"}
# Standard-library types that allocate or grow at run time; fixed-size ones (std::array) are not listed.
DYNAMIC_STD = {"vector", "deque", "list", "forward_list", "map", "multimap", "set", "multiset", "unordered_map",
               "unordered_set", "unordered_multimap", "unordered_multiset", "queue", "priority_queue", "stack",
               "basic_string", "string", "shared_ptr", "unique_ptr", "function", "valarray"}
CONTROL_REGISTERS = ("CTRL", "GIE", "IER", "ISR")
# Vitis HLS's pragma directives (UG1399); g++ ignores any `#pragma HLS`, so a misspelt one would pass C-sim.
DIRECTIVES = {"ALIAS", "ALLOCATION", "AGGREGATE", "ARRAY_PARTITION", "ARRAY_RESHAPE", "ARRAY_STENCIL", "BIND_OP",
              "BIND_STORAGE", "CACHE", "DATAFLOW", "DEPENDENCE", "DISAGGREGATE", "EXPRESSION_BALANCE",
              "FUNCTION_INSTANTIATE", "INLINE", "INTERFACE", "LATENCY", "LOOP_FLATTEN", "LOOP_MERGE",
              "LOOP_TRIPCOUNT", "OCCURRENCE", "PERFORMANCE", "PIPELINE", "PROTOCOL", "RESET", "SHARED", "STABLE",
              "STABLE_CONTENT", "STREAM", "TOP", "UNROLL"}


@dataclass(frozen=True)
class Violation:
    """One finding: where it is, which rule it breaks, and what was found."""

    file: str
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.rule}: {self.message}"


@dataclass
class Report:
    """What the check looked at and what it found."""

    project: Path
    violations: list = field(default_factory=list)
    functions: int = 0
    loops: int = 0
    tripcounted_loops: int = 0
    reached: set = field(default_factory=set)

    @property
    def units(self) -> frozenset:
        """The unit instances (``ops.UNITS``) reachable from the top function: what synthesis would build."""
        return frozenset(self.reached & UNITS)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        head = (f"{self.project}: {self.functions} functions ({len(self.units)} units) reachable from {TOP}, "
                f"{self.loops} loops "
                f"({self.tripcounted_loops} with LOOP_TRIPCOUNT): ")
        if self.ok:
            return head + "synthesizable subset, interface matches regmap.json"
        return head + f"{len(self.violations)} violations\n" + "\n".join(f"  {v}" for v in self.violations)


def _cindex():
    try:
        import clang.cindex as cindex
    except ImportError:
        raise ToolMissingError("the synthesis-mode check needs libclang: pip install libclang==18.1.1") from None
    return cindex


def _include_args(project: Path) -> list[str]:
    include = project / "include"
    if not (include / "edgevit" / "units.h").exists():
        raise InputError(f"{project} has no include/edgevit (the unit headers a Vitis project carries): "
                         f"regenerate it with `edgevit hls MODEL -o {project}`")
    return [f"-I{STUBS}", f"-I{ap_types_dir()}", f"-I{include}", f"-I{project}"]


def _compile(project: Path) -> list[Violation]:
    """g++ in synthesis mode; each error at the place it comes from (a macro's use, not its definition)."""
    cmd = [compiler(), *CXXFLAGS, "-fsyntax-only", "-fno-diagnostics-show-caret", *_include_args(project), "top.cpp"]
    proc = subprocess.run(cmd, cwd=project, capture_output=True, text=True)
    if proc.returncode == 0:
        return []
    found, last = [], None
    for line in proc.stderr.splitlines():
        m = re.match(r"(.+?):(\d+):\d+: (error|note): (.*)", line)
        if not m:
            continue
        file, lineno, kind, text = m.group(1), int(m.group(2)), m.group(3), m.group(4)
        if kind == "error":
            last = Violation(_relative(project, file), lineno, "synthesis compile", text)
            found.append(last)
        elif last is not None and text.startswith("in expansion of macro"):
            found[-1] = last = Violation(_relative(project, file), lineno, last.rule, last.message)
    return list(dict.fromkeys(found)) or [Violation("top.cpp", 1, "synthesis compile", proc.stderr.strip()[-500:])]


def _relative(project: Path, file: str) -> str:
    path = (project / file).resolve()
    try:
        return str(path.relative_to(project.resolve()))
    except ValueError:
        return str(path)


class _Scanner:
    """The libclang walk: call graph from the top function, and the per-function rules."""

    def __init__(self, project: Path, cindex):
        self.project = project.resolve()
        self.ci = cindex
        self.K = cindex.CursorKind
        self.report = Report(project)
        self.lines: dict[str, list[str]] = {}
        self.seen_loops: set = set()

    def own(self, cursor) -> bool:
        """Whether ``cursor`` is in the project's own sources (not a vendor or system header)."""
        f = cursor.location.file
        return f is not None and Path(f.name).resolve().is_relative_to(self.project)

    def where(self, cursor) -> tuple[str, int]:
        return _relative(self.project, cursor.location.file.name), cursor.location.line

    def flag(self, cursor, rule: str, message: str, once_per_line: bool = False) -> None:
        """Record a violation at ``cursor`` (once; with ``once_per_line``, once per line and rule)."""
        v = Violation(*self.where(cursor), rule, message)
        key = (lambda u: (u.file, u.line, u.rule)) if once_per_line else (lambda u: u)
        if not any(key(u) == key(v) for u in self.report.violations):
            self.report.violations.append(v)

    def scan(self, tu) -> Report:
        top = next((c for c in tu.cursor.walk_preorder()
                    if c.kind == self.K.FUNCTION_DECL and c.spelling == TOP and c.is_definition()), None)
        if top is None:
            raise InputError(f"{self.project}/top.cpp defines no {TOP}: regenerate the project")
        self.top = top
        state: dict[str, int] = {}   # USR -> 1 on the DFS stack, 2 done
        self.visit(top, state)
        self.report.functions = len(state)
        return self.report

    def visit(self, fn, state: dict) -> None:
        usr = fn.get_usr()
        state[usr] = 1
        self.report.reached.add(_instance_name(fn))
        for call, callee in self.check_body(fn):
            key = callee.get_usr()
            if state.get(key) == 1:
                self.flag(call, "recursion", f"{fn.spelling} calls {callee.spelling}, which is already on the "
                                             f"call stack: synthesis needs a call graph without cycles")
            elif key not in state:
                self.visit(callee, state)
        self.check_pragma_variables(fn)
        state[usr] = 2

    def check_pragma_variables(self, fn) -> None:
        """Every ``variable=`` of a pragma in ``fn`` names a variable or parameter declared in ``fn``."""
        if not self.own(fn):
            return
        declared = {c.spelling for c in fn.walk_preorder() if c.kind in (self.K.VAR_DECL, self.K.PARM_DECL)}
        lines = self.source(fn.location.file.name)
        for n in range(fn.extent.start.line, fn.extent.end.line + 1):
            m = re.search(r"#pragma HLS .*\bvariable=([\w.]+)", lines[n - 1])
            if m and m.group(1) not in declared:
                file = _relative(self.project, fn.location.file.name)
                v = Violation(file, n, "pragma", f"variable={m.group(1)} names no variable of {fn.spelling}")
                if v not in self.report.violations:
                    self.report.violations.append(v)

    def check_body(self, fn):
        """Apply the per-function rules to ``fn``; yield (call site, callee definition) of own callees."""
        K = self.K
        for c in fn.walk_preorder():
            if c.kind in (K.CXX_NEW_EXPR, K.CXX_DELETE_EXPR):
                self.flag(c, "dynamic allocation", f"`{'new' if c.kind == K.CXX_NEW_EXPR else 'delete'}` in "
                                                   f"{fn.spelling}: use a fixed-size array")
            elif c.kind in (K.VAR_DECL, K.PARM_DECL, K.FIELD_DECL):
                self.check_type(c, c.type.spelling)
            elif c.kind in (K.TYPE_REF, K.TEMPLATE_REF):
                self.check_type(c, _qualified(c.referenced))
            elif c.kind in (K.FOR_STMT, K.WHILE_STMT, K.DO_STMT):
                self.check_loop(c)
            elif c.kind == K.CALL_EXPR and c.referenced is not None:
                callee = c.referenced
                if callee.spelling in ALLOCATORS and not self.own(callee):
                    self.flag(c, "dynamic allocation", f"call to {callee.spelling}() in {fn.spelling}")
                self.check_type(c, _qualified(callee))
                target = callee.get_definition() or callee
                if target.is_definition() and self.own(target):
                    yield c, target

    def check_type(self, cursor, spelling: str) -> None:
        m = re.search(r"\bstd::(?:__\w+::)?(\w+)", spelling or "")
        if m and m.group(1) in DYNAMIC_STD and self.own(cursor):
            self.flag(cursor, "std container", f"std::{m.group(1)} allocates at run time: use a fixed-size array "
                                               f"or edgevit::stream", once_per_line=True)

    def check_loop(self, loop) -> None:
        if not self.own(loop):
            return
        key = self.where(loop) + (loop.location.column,)
        counted = key not in self.seen_loops
        self.seen_loops.add(key)
        pragmas = self.body_pragmas(loop)
        has_tripcount = any("LOOP_TRIPCOUNT" in p or p.startswith("EDGEVIT_TRIPCOUNT(") for p in pragmas)
        if counted:
            self.report.loops += 1
            self.report.tripcounted_loops += has_tripcount
        if any(re.match(r"#pragma HLS PIPELINE\b", p, re.I) for p in pragmas):
            self.check_pipeline(loop)
        if has_tripcount or self.constant_bound(loop):
            return
        kind = {self.K.FOR_STMT: "for", self.K.WHILE_STMT: "while", self.K.DO_STMT: "do"}[loop.kind]
        self.flag(loop, "unbounded loop", f"`{kind}` loop without a constant bound or a LOOP_TRIPCOUNT pragma "
                                          f"(EDGEVIT_TRIPCOUNT) at the top of its braced body")

    def check_pipeline(self, loop) -> None:
        """Pipelining a loop unrolls every loop inside it, also those of the functions it calls: each needs a
        constant bound."""
        file, line = self.where(loop)
        for inner in self.loops_below(loop, set()):
            if not self.constant_bound(inner):
                self.flag(inner, "pipeline", f"loop inside the pipelined loop at {file}:{line} has no constant "
                                             f"bound, so it cannot be unrolled (bound it by a config constant "
                                             f"and mask, or move the PIPELINE pragma inside)")

    def loops_below(self, cursor, visited: set):
        """The loops inside ``cursor`` and inside the project's functions it calls, transitively."""
        K = self.K
        for c in cursor.walk_preorder():
            if c != cursor and c.kind in (K.FOR_STMT, K.WHILE_STMT, K.DO_STMT) and self.own(c):
                yield c
            elif c.kind == K.CALL_EXPR and c.referenced is not None:
                target = c.referenced.get_definition() or c.referenced
                usr = target.get_usr()
                if target.is_definition() and self.own(target) and usr not in visited:
                    visited.add(usr)
                    yield from self.loops_below(target, visited)

    def body_pragmas(self, loop) -> list[str]:
        """The pragma lines (and EDGEVIT_TRIPCOUNT uses) that open the loop's braced body, stripped."""
        body = list(loop.get_children())
        body = body[-1] if loop.kind != self.K.DO_STMT else body[0]
        if body.kind != self.K.COMPOUND_STMT:
            return []
        lines = self.source(body.location.file.name)
        start = body.extent.start
        found = []
        for text in [lines[start.line - 1][start.column:]] + lines[start.line:body.extent.end.line]:
            text = text.strip()
            if text.startswith(("#pragma", "EDGEVIT_TRIPCOUNT(")):
                found.append(text)
            elif text and not text.startswith("//"):
                break
        return found

    def constant_bound(self, loop) -> bool:
        """A ``for`` whose condition compares its own loop variable with compile-time constants only."""
        if loop.kind != self.K.FOR_STMT:
            return False
        header = self.for_header(loop)
        if header is None:
            return False
        init, cond = header
        loop_vars = {var.get_usr() for stmt in loop.get_children() if stmt.kind == self.K.DECL_STMT
                     for var in stmt.get_children() if var.kind == self.K.VAR_DECL and _inside(var, init)}
        refs = [c for ch in loop.get_children() if _inside(ch, cond) for c in ch.walk_preorder()]
        uses_var = False
        for c in refs:
            if c.kind in (self.K.MEMBER_REF_EXPR, self.K.CALL_EXPR):
                return False
            if c.kind == self.K.DECL_REF_EXPR:
                target = c.referenced
                if target is None:
                    # a function template's non-type parameter, substituted in the instantiation: its value
                    if any(k.kind == self.K.INTEGER_LITERAL for k in c.get_children()):
                        continue
                    return False
                if target.get_usr() in loop_vars:
                    uses_var = True
                elif not self.compile_time(target):
                    return False
        return uses_var

    def compile_time(self, decl) -> bool:
        K = self.K
        if decl.kind in (K.ENUM_CONSTANT_DECL, K.TEMPLATE_NON_TYPE_PARAMETER):
            return True
        if decl.kind != K.VAR_DECL or not decl.type.is_const_qualified():
            return False
        return decl.semantic_parent.kind in (K.NAMESPACE, K.STRUCT_DECL, K.CLASS_DECL, K.TRANSLATION_UNIT,
                                             K.CLASS_TEMPLATE)

    def for_header(self, loop):
        """Source ranges (as (start, end) offsets) of a for loop's init and condition, from its tokens."""
        depth, semis, opened = 0, [], None
        for tok in loop.get_tokens():
            if tok.spelling == "(":
                depth += 1
                if opened is None:
                    opened = tok.extent.end.offset
            elif tok.spelling == ")":
                depth -= 1
                if depth == 0:
                    break
            elif tok.spelling == ";" and depth == 1:
                semis.append(tok.extent.start.offset)
        if opened is None or len(semis) != 2:
            return None
        return (opened, semis[0]), (semis[0], semis[1])

    def source(self, name: str) -> list[str]:
        if name not in self.lines:
            self.lines[name] = Path(name).read_text().splitlines()
        return self.lines[name]


def _instance_name(fn) -> str:
    """A function's name with its integral template arguments (``depthwise_unit<1>``), as ``ops.UNITS`` spells the
    unit instances; type arguments (the one ``accel_config``) are left out."""
    values = [str(fn.get_template_argument_value(k)) for k in range(max(fn.get_num_template_arguments(), 0))
              if fn.get_template_argument_kind(k).name == "INTEGRAL"]
    return fn.spelling + (f"<{','.join(values)}>" if values else "")


def _inside(cursor, span) -> bool:
    return span[0] <= cursor.extent.start.offset and cursor.extent.end.offset <= span[1]


def _qualified(decl) -> str:
    names = []
    while decl is not None and decl.kind.is_declaration() and decl.spelling:
        names.append(decl.spelling)
        decl = decl.semantic_parent
    return "::".join(reversed(names))


def _check_interface(project: Path, scanner: _Scanner) -> None:
    """``edgevit_top``'s parameters and INTERFACE pragmas against the register map in ``regmap.json``."""
    regmap_path = project / "regmap.json"
    if not regmap_path.exists():
        raise InputError(f"{project} has no regmap.json: regenerate it with `edgevit hls MODEL -o {project}`")
    regmap = json.loads(regmap_path.read_text())
    top = scanner.top
    params = [p for p in top.get_children() if p.kind == scanner.K.PARM_DECL]
    regs = [r for r in regmap["registers"] if r["name"] not in CONTROL_REGISTERS]
    names = [p.spelling.upper() for p in params]
    if names != [r["name"] for r in regs]:
        scanner.flag(top, "interface", f"{TOP} parameters {names} are not the registers of regmap.json "
                                       f"{[r['name'] for r in regs]} in order")
    for k, (p, r) in enumerate(zip(params, regs)):
        if p.type.kind != scanner.ci.TypeKind.POINTER:
            scanner.flag(p, "interface", f"{p.spelling} is not a pointer (an m_axi buffer address)")
        if int(r["offset"], 16) != 0x10 + 12 * k:   # Vitis: 64-bit address + one reserved word per pointer
            scanner.flag(top, "interface", f"regmap.json puts {r['name']} at {r['offset']}, Vitis at "
                                           f"0x{0x10 + 12 * k:02x}")
    text = (project / "top.cpp").read_text()
    bundle = regmap.get("control", "").removeprefix("s_axi_")
    for p in params:
        if not re.search(rf"#pragma HLS INTERFACE (mode=)?m_axi port={p.spelling} offset=slave\b", text):
            scanner.flag(p, "interface", f"no `#pragma HLS INTERFACE m_axi port={p.spelling} offset=slave`")
        if not re.search(rf"#pragma HLS INTERFACE (mode=)?s_axilite port={p.spelling} bundle={bundle}\b", text):
            scanner.flag(p, "interface", f"the address of {p.spelling} is not in s_axilite bundle {bundle}")
    if not re.search(rf"#pragma HLS INTERFACE (mode=)?s_axilite port=return bundle={bundle}\b", text):
        scanner.flag(top, "interface", f"no `#pragma HLS INTERFACE s_axilite port=return bundle={bundle}`: "
                                       f"ap_start/ap_done would not be in {regmap.get('control')}")


def _check_directives(project: Path, tu, scanner: _Scanner) -> None:
    """Every ``#pragma HLS X`` (or ``EDGEVIT_PRAGMA(HLS X ...)``) in the project's sources names a Vitis directive."""
    files = {str((project / "top.cpp").resolve())}
    files |= {str(Path(inc.include.name).resolve()) for inc in tu.get_includes()}
    for name in sorted(files):
        if not Path(name).is_relative_to(project.resolve()):
            continue
        for n, line in enumerate(scanner.source(name), 1):
            for m in re.finditer(r"(?:#pragma\s+HLS|EDGEVIT_PRAGMA\(HLS)\s+(\w+)", line, re.I):
                if m.group(1).upper() not in DIRECTIVES:
                    v = Violation(_relative(project, name), n, "pragma", f"`{m.group(1)}` is not a Vitis HLS pragma")
                    scanner.report.violations.append(v)


def check_project(project: Path) -> Report:
    """Run the synthesis-mode compile, the reachability scan and the interface check on ``project``.

    Returns
    -------
    Report
        Counts of what was scanned and the violations found (empty when the project passes).

    Raises
    ------
    InputError
        If ``project`` is not a generated HLS project (no ``top.cpp``, ``include/`` or ``regmap.json``).
    ToolMissingError
        If g++, the ap_types headers or libclang are missing.
    """
    project = Path(project)
    if not (project / "top.cpp").exists():
        raise InputError(f"{project} is not an edgevit HLS project (no top.cpp); create one with "
                         f"`edgevit hls MODEL -o DIR`")
    cindex = _cindex()
    compiled = _compile(project)
    gcc_include = subprocess.run([compiler(), "-print-file-name=include"], capture_output=True, text=True).stdout
    args = ["-x", "c++", *CXXFLAGS, *_include_args(project), "-isystem", gcc_include.strip()]
    tu = cindex.Index.create().parse(str(project / "top.cpp"), args=args)
    errors = [d for d in tu.diagnostics if d.severity >= cindex.Diagnostic.Error]
    if errors and not compiled:
        raise EdgevitError(f"libclang cannot parse {project}/top.cpp although g++ can: {errors[0]}")
    scanner = _Scanner(project, cindex)
    report = scanner.scan(tu)
    _check_interface(project, scanner)
    _check_directives(project, tu, scanner)
    report.violations = compiled + report.violations
    return report


def require_synthesizable(project: Path) -> Report:
    """:func:`check_project`, raising :class:`VerificationError` listing the violations if there are any."""
    report = check_project(project)
    if not report.ok:
        raise VerificationError(report.summary())
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgevit.hls.synth_check", description=__doc__.split("\n")[0])
    parser.add_argument("projects", nargs="+", type=Path, help="generated HLS project folders")
    args = parser.parse_args(argv)
    status = 0
    for project in args.projects:
        try:
            report = check_project(project)
        except EdgevitError as e:
            print(f"{project}: {e}", file=sys.stderr)
            return e.exit_code
        print(report.summary())
        status = status or (0 if report.ok else VerificationError.exit_code)
    return status


if __name__ == "__main__":
    sys.exit(main())
