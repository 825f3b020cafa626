"""Plan files are untrusted input: every malformed one is refused with a line that names the field, and no
file outside the plan's folder is ever used."""

from __future__ import annotations

import copy
import json

import pytest

from edgevit.distributed.plan import PLAN_FORMAT, read_plan
from edgevit.errors import InputError

PIPELINE = {"format": PLAN_FORMAT, "format_version": 1, "strategy": "pipeline", "model": "m",
            "input": {"name": "x", "shape": [1, 3], "dtype": "float32"}, "whole_model": "model.onnx",
            "predicted": {"latency_ms": 1.0}, "stages": [
                {"name": "stage0", "artifact": "artifacts/s0.tar", "sha256": "0" * 64, "node_key": "x86",
                 "slot": "x86#0", "inputs": ["x"], "outputs": ["y"], "predicted": {}, "target": "host"}]}


def _edit(fn):
    plan = copy.deepcopy(PIPELINE)
    fn(plan)
    return plan


CASES = [
    (lambda p: p.update(format="nope"), "not an edgevit plan"),
    (lambda p: p.pop("strategy"), "field 'strategy' must be one of 'class', 'pipeline', got None"),
    (lambda p: p.update(strategy="ring"), "field 'strategy' must be one of 'class', 'pipeline', got 'ring'"),
    (lambda p: p.update(model=7), "field 'model' must be a string, got 7"),
    (lambda p: p.update(stages=[]), "field 'stages' must have 1 to 65536 items, got 0"),
    (lambda p: p.update(stages="stage0"), "field 'stages' must be a list"),
    (lambda p: p["stages"].append(3), "field 'stages\\[1\\]' must be a table/object, got 3"),
    (lambda p: p["stages"][0].pop("artifact"), "stages\\[0\\] needs either an artifact or an accelerator, not neither"),
    (lambda p: p["stages"][0].update(accelerator={"board": "zcu102", "bundle_sha256": "0" * 64}),
     "stages\\[0\\] needs either an artifact or an accelerator, not both"),
    (lambda p: p["stages"][0].update(accelerator={"board": 3}), "field 'stages\\[0\\].accelerator.board' must be a string"),
    (lambda p: p.update(verify_rtol="loose"), "field 'verify_rtol' must be a number"),
    (lambda p: p["stages"][0].update(inputs="x"), "field 'stages\\[0\\].inputs' must be a list, got 'x'"),
    (lambda p: p["stages"][0].update(sha256=None), "field 'stages\\[0\\].sha256' must be a string, got None"),
    (lambda p: p["stages"][0].update(artifact="../../etc/passwd"), "outside the plan's folder"),
    (lambda p: p["stages"][0].update(artifact="/etc/passwd"), "outside the plan's folder"),
    (lambda p: p.update(whole_model="../model.onnx"), "outside the plan's folder"),
    (lambda p: p.pop("predicted"), "field 'predicted' is missing"),
    (lambda p: p.update(input=[1, 3]), "field 'input' must be a table/object, got \\[1, 3\\]"),
]


@pytest.mark.parametrize("edit,message", CASES)
def test_malformed_plan_is_refused_naming_the_field(tmp_path, edit, message):
    (tmp_path / "plan.json").write_text(json.dumps(_edit(edit)))
    with pytest.raises(InputError, match=message):
        read_plan(tmp_path)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", "\"plan\"", "\x00\xff"])
def test_unreadable_plan_is_refused(tmp_path, text):
    (tmp_path / "plan.json").write_text(text)
    with pytest.raises(InputError):
        read_plan(tmp_path)


def test_a_link_out_of_the_folder_is_refused(tmp_path):
    (tmp_path / "artifacts").mkdir()
    (tmp_path / "artifacts" / "s0.tar").symlink_to("/etc/passwd")
    (tmp_path / "plan.json").write_text(json.dumps(PIPELINE))
    with pytest.raises(InputError, match="outside the plan's folder"):
        read_plan(tmp_path)


def test_a_good_plan_resolves_inside_its_folder(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps(PIPELINE))
    plan = read_plan(tmp_path / "plan.json")
    assert plan["stages"][0]["artifact"] == str((tmp_path / "artifacts" / "s0.tar").resolve())


def test_infer_on_a_broken_plan_prints_one_line(tmp_path, capsys):
    from edgevit.cli import main

    (tmp_path / "plan.json").write_text(json.dumps(_edit(lambda p: p["stages"][0].pop("slot"))))
    code = main(["infer", str(tmp_path), "--tracker", "127.0.0.1:1", "--insecure-plaintext"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == InputError.exit_code and len(err) == 1 and "stages[0].slot" in err[0]


@pytest.mark.parametrize("option", [["--stream", "-3"], ["--stream", "0"], ["--timeout", "nan"], ["--wait", "-1"],
                                    ["--stall-timeout", "soon"], ["--rtol", "-1e-5"]])
def test_infer_refuses_bad_numbers_with_one_line(tmp_path, capsys, option):
    from edgevit.cli import main
    from edgevit.errors import UsageError

    (tmp_path / "plan.json").write_text(json.dumps(PIPELINE))
    code = main(["infer", str(tmp_path), "--tracker", "127.0.0.1:1", "--insecure-plaintext", *option])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == UsageError.exit_code and len(err) == 1 and option[0] in err[0]
