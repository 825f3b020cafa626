"""Multi-task mixture-of-experts ViTs (``models/moe_vit.py``): trained presets, per-task builds and their
summaries (experts and parameters each task's build carries).

A name ``PRESET[:TASK]`` (``moe_vit_tiny:parity``) names one task's build, which is what every backend compiles:
the CPU path exports it to ONNX like any torch module (:mod:`edgevit.frontend`), the FPGA path lowers it with
:mod:`edgevit.hls.moe_import`. :mod:`.train` trains the presets on two digits tasks; :mod:`.evaluate` measures
each task build on both paths against PyTorch (``tools/moe_report.py``).
"""

from .models import TaskModelName, is_moe_name, load_task_model, model_module, parse_name, task_build_summary
from .train import trained_moe_vit

__all__ = ["TaskModelName", "is_moe_name", "load_task_model", "model_module", "parse_name", "task_build_summary",
           "trained_moe_vit"]
