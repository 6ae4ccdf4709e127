"""Build the split demo: a 64x64 image CNN whose heavy layers come after a cheap, downsampling stem.

    python examples/splitdemo/build.py    # writes demo_cnn.onnx, calib.npz and sample.npy here

On a Raspberry-Pi-class edge device the heavy 8x8x256 convolutions are slow, while the stem's output
(8x8x64) quantizes to a few hundred bytes: on a slow link the best plan cuts after the stem; on a fast
one it sends the image (JPEG) to the cloud. The weights are random (seeded), so the accuracy is the
relative L2 error of the outputs against the float model (``--metric rel-l2``). The inputs are smooth
random images (low-frequency noise), as photos are smooth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
SIZE = 64


def _conv(nodes, inits, rng, x, cin, cout, stride, name):
    w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2.0 / (cin * 9))).astype(np.float32)
    b = np.zeros(cout, np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}/conv"], name=f"{name}/conv",
                                  pads=[1, 1, 1, 1], strides=[stride, stride], kernel_shape=[3, 3]))
    nodes.append(helper.make_node("Relu", [f"{name}/conv"], [f"{name}/relu"], name=f"{name}/relu"))
    return f"{name}/relu"


def build(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = _conv(nodes, inits, rng, "image", 3, 32, 2, "stem1")        # 32x32
    x = _conv(nodes, inits, rng, x, 32, 64, 2, "stem2")             # 16x16
    nodes.append(helper.make_node("MaxPool", [x], ["stem/pool"], name="stem/pool", kernel_shape=[2, 2],
                                  strides=[2, 2]))                   # 8x8x64: the cheap cut
    x = "stem/pool"
    x = _conv(nodes, inits, rng, x, 64, 384, 1, "body1")
    for i in range(2, 6):
        x = _conv(nodes, inits, rng, x, 384, 384, 1, f"body{i}")
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["head/gap"], name="head/gap"))
    nodes.append(helper.make_node("Flatten", ["head/gap"], ["head/flat"], name="head/flat"))
    w = (rng.standard_normal((10, 384)) / np.sqrt(384)).astype(np.float32)
    inits.append(numpy_helper.from_array(w, "head.w"))
    inits.append(numpy_helper.from_array(np.zeros(10, np.float32), "head.b"))
    nodes.append(helper.make_node("Gemm", ["head/flat", "head.w", "head.b"], ["logits"], name="head/fc", transB=1))
    graph = helper.make_graph(nodes, "split_demo_cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def smooth_images(count: int, seed: int) -> np.ndarray:
    """Low-frequency random images in [0, 1]: 8x8 noise upsampled bilinearly, plus a little fine noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        coarse = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
        big = np.asarray(Image.fromarray(coarse).resize((SIZE, SIZE), Image.BILINEAR), np.float32) / 255.0
        big = np.clip(big + rng.normal(0, 0.02, big.shape), 0, 1)
        images.append(big.transpose(2, 0, 1))
    return np.stack(images).astype(np.float32)


def main() -> None:
    onnx.save(build(), HERE / "demo_cnn.onnx")
    np.savez(HERE / "calib.npz", image=smooth_images(48, 1))
    np.save(HERE / "sample.npy", smooth_images(1, 2))


if __name__ == "__main__":
    main()
