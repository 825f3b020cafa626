"""Write the tiny .tflite fixture of tests/backends (conv -> relu -> linear) and its input/output pair.

Runs in the LiteRT converter venv (tools/setup_litert.sh), which has litert-torch:

    ~/.cache/edgevit/litert-venv-*/bin/python tools/make_tiny_tflite.py tests/backends/data
"""

import sys
from pathlib import Path

import litert_torch
import numpy as np
import torch

out = Path(sys.argv[1])
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(8 * 6 * 6, 4)).eval()
x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 8, 8), np.float32))
litert_torch.convert(model, (x,)).export(str(out / "tiny.tflite"))
with torch.no_grad():
    np.savez(out / "tiny_io.npz", x=x.numpy(), y=model(x).numpy())
