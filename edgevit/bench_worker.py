"""One engine of ``edgevit bench`` in a process of its own: load a model, then time blocks of runs on request.

``python -m edgevit.bench_worker ENGINE MODEL INPUTS.npz OUTPUTS.npz THREADS``, ENGINE one of ``edgevit``
(a compiled library), ``onnxruntime`` (an .onnx file) or ``litert`` (a .tflite file). The worker runs the
model once on the inputs, saves the outputs, prints ``ready``, then answers each line ``N`` on stdin with
JSON: the N run times in seconds and the CPU seconds all its threads used meanwhile, until stdin closes.

Imports numpy and the one engine only, so it also runs in the LiteRT converter venv (``tools/setup_litert.sh``)
with the checkout on ``PYTHONPATH``.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def load_engine(engine: str, model: str, threads: int):
    """A callable running ``model`` on a list of numpy inputs (model input order), returning numpy outputs."""
    if engine == "edgevit":
        from .runtime.tvm_runtime import CompiledModel  # threads: TVM_NUM_THREADS, set by the parent

        return CompiledModel(model)
    if engine == "onnxruntime":
        from .reference import onnxruntime_session

        session = onnxruntime_session(model, threads)
        names = [i.name for i in session.get_inputs()]
        return lambda inputs: session.run(None, dict(zip(names, inputs)))
    if engine == "litert":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=model, num_threads=threads)
        interpreter.allocate_tensors()
        ins, outs = interpreter.get_input_details(), interpreter.get_output_details()

        def run(inputs):  # an int8 model (edgevit.litert_int8) takes and gives int8: (de)quantize with its scales
            for d, x in zip(ins, inputs):
                if d["dtype"] != x.dtype and np.issubdtype(d["dtype"], np.integer):
                    scale, zero = d["quantization"]
                    info = np.iinfo(d["dtype"])
                    x = np.clip(np.round(x / scale) + zero, info.min, info.max).astype(d["dtype"])
                interpreter.set_tensor(d["index"], x)
            interpreter.invoke()
            results = []
            for d in outs:
                y = interpreter.get_tensor(d["index"])
                if np.issubdtype(d["dtype"], np.integer) and d["quantization"][0]:
                    y = (y.astype(np.float32) - d["quantization"][1]) * np.float32(d["quantization"][0])
                results.append(y)
            return results

        return run
    raise ValueError(f"unknown engine '{engine}'")


def main(argv: list[str]) -> int:
    engine, model, inputs_path, outputs_path, threads = argv
    with np.load(inputs_path) as data:
        inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
    run = load_engine(engine, model, int(threads))
    np.savez(outputs_path, *run(inputs))
    print("ready", flush=True)
    for line in sys.stdin:
        seconds, cpu = [], time.process_time()
        for _ in range(int(line)):
            start = time.perf_counter()
            run(inputs)
            seconds.append(time.perf_counter() - start)
        print(json.dumps({"seconds": seconds, "cpu_s": time.process_time() - cpu}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
