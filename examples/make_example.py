"""Write the bundled example model ``examples/resnet_blocks.onnx`` from splitc.zoo.

Usage: python examples/make_example.py [output_path]
"""

from __future__ import annotations

import pathlib
import sys

try:
    from splitc import zoo
except ImportError:  # running from a source checkout without installing
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
    from splitc import zoo

import onnx


def main(argv: list[str]) -> pathlib.Path:
    default = pathlib.Path(__file__).resolve().parent / "resnet_blocks.onnx"
    out = pathlib.Path(argv[0]) if argv else default
    model = zoo.build("resnet_blocks")
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(out))
    print(f"wrote {out} ({out.stat().st_size} bytes, {len(model.graph.node)} nodes)")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
