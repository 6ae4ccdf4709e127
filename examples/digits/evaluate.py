"""Print onnxruntime top-1 accuracy of an ONNX classifier on the digits test split.

Usage:  python examples/digits/evaluate.py [MODEL.onnx] [--data test.npz]

Defaults to examples/digits/digits_cnn.onnx on examples/digits/test.npz. The
model must take one float32 input of shape [1,1,8,8] and produce logits whose
argmax (over all elements of its first output) is the predicted class.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
import onnxruntime as ort

HERE = os.path.dirname(os.path.abspath(__file__))


def top1(model_path: str, data_path: str) -> tuple[float, int]:
    data = np.load(data_path)
    x, y = data["image"].astype(np.float32), data["labels"]
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_name = sess.get_outputs()[0].name
    correct = 0
    for i in range(len(y)):
        logits = sess.run([out_name], {in_name: x[i:i + 1]})[0]
        correct += int(np.argmax(logits) == y[i])
    return correct / len(y), len(y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=os.path.join(HERE, "digits_cnn.onnx"))
    ap.add_argument("--data", default=os.path.join(HERE, "test.npz"))
    args = ap.parse_args()
    acc, n = top1(args.model, args.data)
    print(f"{os.path.basename(args.model)} on {os.path.basename(args.data)}: "
          f"top-1 {acc:.4f} ({round(acc * n)}/{n})")


if __name__ == "__main__":
    main()
