"""``edgevit tune``: a short search on the tiny CNN, locally and through a local TVM RPC tracker and server,
then ``compile --tuning-db`` and verification against onnxruntime (function only, no timings)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from edgevit.backends import tuning, tvm_compiler
from edgevit.compiler import compile_for_target
from edgevit.distributed.local_cluster import free_port, kill_group
from edgevit.errors import EdgevitError
from edgevit.frontend import load_model
from edgevit.reference import compare, random_inputs, run_onnxruntime
from edgevit.runtime.artifact import Artifact
from edgevit.runtime.tvm_runtime import CompiledModel
from edgevit.targets import get_target


def _check_database(db, onnx_path, tmp_path):
    summary = json.loads((db / tuning.SUMMARY).read_text())
    assert summary["target"] == "host" and summary["kernels"]
    assert all(k["baseline_s"] is not None for k in summary["kernels"])  # every default schedule was measured
    assert all(k["uses"] in ("default", "variant", "search") for k in summary["kernels"])
    # the rules' other tile choices were measured for the kernels that take the time (share 0.9)
    assert any(k["variant"] for k in summary["kernels"])
    # the database holds exactly one record per kernel that does not keep its default schedule
    records = (db / "database_tuning_record.json").read_text().splitlines()
    assert len(records) == sum(k["uses"] != "default" for k in summary["kernels"])
    assert (db / "measured" / "database_tuning_record.json").read_text().count("\n") >= len(summary["kernels"])
    model = load_model(str(onnx_path))
    meta = compile_for_target(model, get_target("host"), tmp_path / "tuned.tar", command="pytest", tuning_db=db)
    assert meta["tuned"] and meta["tuning_db"] == str(db)
    with Artifact.open(tmp_path / "tuned.tar") as artifact:
        inputs = random_inputs(model.inputs, 0)
        result = compare(CompiledModel(artifact.library)(inputs), run_onnxruntime(artifact.reference, inputs))
    assert result.ok, result


@pytest.mark.parametrize("chosen_faster", [True, False])
def test_tune_locally_then_compile_with_the_database(tiny_onnx, tmp_path, monkeypatch, chosen_faster):
    """The per-kernel choices are kept only when the whole model built with them times faster than with the
    defaults (the final check's timing is replaced here, to take both branches)."""
    from edgevit.runtime import profiling

    real, timed = profiling.time_models, []

    def time_models(libraries, *args, **kwargs):  # the real timing runs; its verdict is then forced
        timed.append(real(libraries, *args, **kwargs))
        return [2.0, 1.0] if chosen_faster else [1.0, 1.0]

    monkeypatch.setattr(profiling, "time_models", time_models)
    model = load_model(str(tiny_onnx))
    db = tmp_path / "db"
    summary = tuning.tune(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("host"), db, trials=2,
                          threads=1)
    assert len(timed) == 1 and len(timed[0]) == 2 and min(timed[0]) > 0  # default vs chosen build, once
    assert summary["model_ms"] == ({"default": 2.0, "chosen": 1.0} if chosen_faster
                                   else {"default": 1.0, "chosen": 1.0})
    # chosen inside the model: no kernel kept a choice slower there than its default; a kernel the model never
    # calls (the reshape: a runtime view after lowering) has no in-model time and keeps its default
    assert summary["selected_by"].startswith("in-model profile") and summary["threads"] == 1
    assert ("defaults kept" in summary["selected_by"]) != chosen_faster
    profiled = [k for k in summary["kernels"] if k["in_model_default_ms"] is not None]
    assert len(profiled) >= 3
    for kernel in summary["kernels"]:
        if kernel["in_model_default_ms"] is None:
            assert kernel["uses"] == "default" and "reshape" in kernel["kernel"]
            continue
        assert 0 < kernel["in_model_ms"] <= kernel["in_model_default_ms"]
        if chosen_faster:
            assert (kernel["uses"] == "default") == (kernel["in_model_ms"] == kernel["in_model_default_ms"])
        else:
            assert kernel["uses"] == "default"
    _check_database(db, tiny_onnx, tmp_path)


def test_tune_skips_the_search_where_metaschedule_has_no_space(tmp_path):
    """MetaSchedule's rules crash on the fused attention kernel: it gets tile variants only, the rest is searched."""
    from tiny_onnx_models import tiny_attention_onnx

    onnx_path = tiny_attention_onnx(tmp_path / "attention.onnx")
    model = load_model(str(onnx_path))
    db = tmp_path / "db"
    summary = tuning.tune(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("host"), db, trials=2)
    attention = [k for k in summary["kernels"] if "attention" in k["kernel"]]
    assert attention and attention[0]["tuned_s"] is None and attention[0]["baseline_s"] is not None
    assert any(k["tuned_s"] is not None for k in summary["kernels"])  # the other kernels were searched
    _check_database(db, onnx_path, tmp_path)


def test_tune_through_rpc(tiny_onnx, tmp_path):
    port, server_port = free_port(), free_port()
    # Own process groups: the server forks a worker per session, which must die with it.
    tracker = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1",
                                "--port", str(port), "--port-end", str(port + 1)], start_new_session=True)
    server = None
    try:
        time.sleep(2)
        server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                   "--port", str(server_port), "--port-end", str(server_port + 1),
                                   "--tracker", f"127.0.0.1:{port}", "--key", "pytest-board"],
                                  start_new_session=True)
        time.sleep(3)
        model = load_model(str(tiny_onnx))
        db = tmp_path / "db"
        summary = tuning.tune(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("host"), db,
                              trials=2, rpc=tuning.RpcSettings("127.0.0.1", port, "pytest-board"))
        assert summary["measured_on"].startswith("rpc 127.0.0.1")
        assert summary["selected_by"] == "isolated measurement" and summary["model_ms"] is None
        _check_database(db, tiny_onnx, tmp_path)
    finally:
        for proc in (server, tracker):
            if proc is not None:
                kill_group(proc)


def test_cross_target_needs_rpc(tiny_onnx, tmp_path):
    model = load_model(str(tiny_onnx))
    with pytest.raises(EdgevitError, match="rpc-tracker"):
        tuning.tune(tvm_compiler.import_onnx(model.load(), model.inputs), get_target("rpi4"), tmp_path / "db")


def test_database_is_checked(tmp_path):
    with pytest.raises(EdgevitError, match="edgevit tune"):
        tuning.load_database(tmp_path)
    (tmp_path / tuning.SUMMARY).write_text(json.dumps({"target": "rpi4"}))
    with pytest.raises(EdgevitError, match="rpi4"):
        tuning.load_database(tmp_path, "host")
