"""Run one TVM half on saved inputs; meant for an aarch64 Python under qemu-user.

    python run_half.py OUT_DIR SIDE INPUTS.npz OUTPUTS.npz

It loads ``splitc/runtime/tvm_half.py`` straight from its file, so the device
needs only numpy and TVM's runtime (no onnxruntime, no splitc compiler).
"""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path

import numpy as np

HALF = Path(__file__).resolve().parents[2] / "splitc" / "runtime" / "tvm_half.py"


def load_tvm_half():
    """The ``splitc.runtime.tvm_half`` module, imported from its file alone."""
    spec = importlib.util.spec_from_file_location("tvm_half", HALF)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main(out_dir: str, side: str, inputs: str, outputs: str) -> None:
    """Run ``side`` of the split in ``out_dir`` on ``inputs`` and save what it returns."""
    entry = json.loads((Path(out_dir) / "plan.json").read_text())[side]
    half = load_tvm_half().TvmHalf(Path(out_dir) / entry["file"], entry)
    feeds = dict(np.load(inputs))
    results = half.run(None, feeds)
    np.savez(outputs, **dict(zip(half.output_names, results)))
    import tvm

    print(f"ran {entry['file']} on {platform.machine()} with TVM {tvm.__version__} "
          f"(compiler loaded: {'tvm.relax' in sys.modules})")


if __name__ == "__main__":
    main(*sys.argv[1:5])
