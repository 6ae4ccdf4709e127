"""Train a small CNN on scikit-learn's bundled digits data set and export it to ONNX.

Usage:  python examples/digits/train.py

Writes (next to this file):
  digits_cnn.onnx  - float32 model, input ``image`` [1,1,8,8], output ``logits`` [1,10]
  calib.npz        - calibration split: ``image`` (N,1,8,8) float32, ``labels`` (N,) int64
  test.npz         - held-out test split, same keys
  sample.npy       - one test image, (1,1,8,8) float32

Everything is seeded and runs single-threaded on CPU, so reruns reproduce the
same splits (always) and, on the same torch build, the same weights.
"""
from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),                                   # 8x8 -> 4x4
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
            nn.MaxPool2d(2),                                   # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 2 * 2, 64), nn.ReLU(),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def make_splits():
    """Fixed, seeded, stratified 60/20/20 split of the 1797 digits images."""
    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]   # (N,1,8,8) in [0,1]
    y = d.target.astype(np.int64)
    x_tr, x_rest, y_tr, y_rest = train_test_split(
        x, y, test_size=0.4, stratify=y, random_state=SEED)
    x_cal, x_te, y_cal, y_te = train_test_split(
        x_rest, y_rest, test_size=0.5, stratify=y_rest, random_state=SEED)
    return (x_tr, y_tr), (x_cal, y_cal), (x_te, y_te)


def train(model, x, y, epochs: int, batch: int = 32, lr: float = 1e-3):
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    g = torch.Generator().manual_seed(SEED)
    for ep in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=g)
        total = 0.0
        for i in range(0, len(xt), batch):
            idx = perm[i:i + batch]
            xb = xt[idx]
            # light augmentation: random shift by up to 1 pixel
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            opt.zero_grad()
            loss = loss_fn(model(xb), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if ep % 10 == 0 or ep == epochs - 1:
            print(f"epoch {ep:3d}  loss {total / len(xt):.4f}")


@torch.no_grad()
def torch_predict(model, x):
    model.eval()
    return model(torch.from_numpy(x)).argmax(1).numpy()


def ort_predict(path, x):
    import onnxruntime as ort
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return np.array([int(sess.run(["logits"], {"image": x[i:i + 1]})[0].argmax())
                     for i in range(len(x))])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out-dir", default=HERE)
    args = ap.parse_args()

    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

    (x_tr, y_tr), (x_cal, y_cal), (x_te, y_te) = make_splits()
    print(f"split sizes: train {len(y_tr)}  calib {len(y_cal)}  test {len(y_te)}")

    model = DigitsCNN()
    t0 = time.time()
    train(model, x_tr, y_tr, args.epochs)
    print(f"trained in {time.time() - t0:.1f}s")

    pt_cal, pt_te = torch_predict(model, x_cal), torch_predict(model, x_te)
    print(f"torch top-1: calib {np.mean(pt_cal == y_cal):.4f}  test {np.mean(pt_te == y_te):.4f}")

    os.makedirs(args.out_dir, exist_ok=True)
    onnx_path = os.path.join(args.out_dir, "digits_cnn.onnx")
    model.eval()
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # legacy exporter notice
    torch.onnx.export(
        model, (torch.zeros(1, 1, 8, 8),), onnx_path,
        input_names=["image"], output_names=["logits"],
        opset_version=17, do_constant_folding=True, dynamo=False,
    )
    import onnx
    m = onnx.load(onnx_path)
    onnx.checker.check_model(m, full_check=True)
    print(f"wrote {onnx_path} ({os.path.getsize(onnx_path)} bytes), ops:",
          [n.op_type for n in m.graph.node])

    ort_cal, ort_te = ort_predict(onnx_path, x_cal), ort_predict(onnx_path, x_te)
    assert np.array_equal(ort_te, pt_te), "onnxruntime and torch disagree on test split"
    assert np.array_equal(ort_cal, pt_cal), "onnxruntime and torch disagree on calib split"
    print(f"onnxruntime top-1: calib {np.mean(ort_cal == y_cal):.4f}  "
          f"test {np.mean(ort_te == y_te):.4f}  (matches torch predictions)")

    np.savez(os.path.join(args.out_dir, "calib.npz"), image=x_cal, labels=y_cal)
    np.savez(os.path.join(args.out_dir, "test.npz"), image=x_te, labels=y_te)
    np.save(os.path.join(args.out_dir, "sample.npy"), x_te[:1].copy())
    print("wrote calib.npz, test.npz, sample.npy")


if __name__ == "__main__":
    main()
