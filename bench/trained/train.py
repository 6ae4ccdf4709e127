"""Train small VGG- and ResNet-style CNNs on the 12-class photo-crop task and export them to ONNX.

The task is ``bench/photos.py``: a 64x64 crop of one of twelve bundled photographs, labelled by the
photograph. Training crops come from the left 60% of each photograph and are drawn afresh every epoch
(the generator gives unlimited crops), held-out crops from the right 40%.

    python bench/trained/train.py --model vgg --out bench/trained/ --epochs 12
    python bench/trained/train.py --model resnet --out bench/trained/ --epochs 20

writes ``{vgg,resnet}_photos.onnx`` (opset 17, input ``input`` of shape (1, 3, 64, 64) in [0, 1], output
``logits`` of shape (1, 12); BatchNorm folded into the convolutions), ``calib.npz`` (256 training-region
crops, seeded apart from the training crops, plus ``labels``), ``heldout.npz`` (512 held-out crops plus
``labels``) and ``accuracy.json`` (one entry per model, merged with what the file already holds).
Training is seeded and single-process; with the same ``--threads`` it reproduces the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import photos

SIZE = 64
CLASSES = len(photos.CLASSES)
CALIB_COUNT, HELDOUT_COUNT = 256, 512
CALIB_SEED, HELDOUT_SEED = 7_001, 7_002  # training crops use seeds 10_000 + epoch
OPSET = 17
EPOCHS = {"vgg": 12, "resnet": 20}  # the committed models' epochs, used when --epochs is not given


# ---------------------------------------------------------------------------------------------- models

def conv_bn(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGG(nn.Module):
    """conv3x3-BN-ReLU stacks with max-pools: 32 | 64 | 128 128 | 128 128, then a 2048-128-12 MLP head."""

    LAYOUT = (32, "M", 64, "M", 128, 128, "M", 128, 128, "M")

    def __init__(self, classes: int = CLASSES, hidden: int = 128):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for item in self.LAYOUT:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn(cin, item)
                cin = item
        self.features = nn.Sequential(*layers)
        side = SIZE // 2 ** self.LAYOUT.count("M")
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(0.3), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class BasicBlock(nn.Module):
    """Two conv3x3-BN layers with an identity (or 1x1-conv-BN, when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A stride-2 conv stem, then three stages of two basic blocks (32, 64, 128 channels), global pool, FC."""

    def __init__(self, classes: int = CLASSES, widths: tuple[int, ...] = (32, 64, 128), blocks: int = 2):
        super().__init__()
        self.stem = nn.Sequential(*conv_bn(3, widths[0], stride=2))
        stages, cin = [], widths[0]
        for i, width in enumerate(widths):
            for j in range(blocks):
                stages.append(BasicBlock(cin, width, 2 if (i > 0 and j == 0) else 1))
                cin = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


MODELS = {"vgg": VGG, "resnet": ResNet}


# ---------------------------------------------------------------------------------------------- training

def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random flips, zooms (a 70-100% sub-square resized back), brightness/contrast and a little noise.

    Brightness and contrast change every channel alike, so grey photographs stay grey.
    """
    n = len(x)
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    scale = 0.7 + 0.3 * torch.rand(n, generator=generator)
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - scale)[:, None]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = 1 + (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.4
    brightness = (torch.rand(n, 1, 1, 1, generator=generator) - 0.5) * 0.2
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean + brightness + 0.02 * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1)


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch: int = 128) -> float:
    model.eval()
    with torch.no_grad():
        hits = sum(int((model(torch.from_numpy(images[i:i + batch])).argmax(1).numpy() == labels[i:i + batch]).sum())
                   for i in range(0, len(images), batch))
    return hits / len(images)


def macs(model: nn.Module) -> int:
    """Multiply-accumulates of one (1, 3, 64, 64) forward pass, over the Conv2d and Linear layers."""
    total = 0

    def count(module, _inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += output.numel() * (module.in_channels // module.groups) * module.kernel_size[0] * module.kernel_size[1]
        else:
            total += module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, SIZE, SIZE))
    for hook in hooks:
        hook.remove()
    return total


def train(name: str, epochs: int, per_epoch: int, batch: int, lr: float, seed: int, log) -> tuple[nn.Module, dict]:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = MODELS[name]()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * (per_epoch // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    start = time.perf_counter()
    for epoch in range(epochs):
        images, labels = photos.crops(per_epoch, "train", seed=10_000 + epoch, size=SIZE)
        images, labels = torch.from_numpy(images), torch.from_numpy(labels)
        order = torch.randperm(per_epoch, generator=generator)
        model.train()
        seen = hits = 0
        loss_sum = 0.0
        for i in range(per_epoch // batch):
            index = order[i * batch:(i + 1) * batch]
            x, y = augment(images[index], generator), labels[index]
            logits = model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(y)
            hits += int((logits.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
        log(f"{name} epoch {epoch + 1}/{epochs}: loss {loss_sum / seen:.3f}, train acc {hits / seen:.3f}, "
            f"{time.perf_counter() - start:.0f}s")
    seconds = time.perf_counter() - start
    return model, {"epochs": epochs, "crops_per_epoch": per_epoch, "batch": batch, "max_lr": lr, "seed": seed,
                   "train_seconds": round(seconds, 1), "final_epoch_train_accuracy": round(hits / seen, 4)}


# ---------------------------------------------------------------------------------------------- export

def export(model: nn.Module, path: Path) -> None:
    """Legacy (TorchScript) exporter, eval mode: BatchNorm is folded into the preceding Conv."""
    import onnx

    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model, (torch.zeros(1, 3, SIZE, SIZE),), str(path), dynamo=False, opset_version=OPSET,
                          input_names=["input"], output_names=["logits"], do_constant_folding=True)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    for value in (*proto.graph.input, *proto.graph.output):
        dims = value.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), f"{value.name} has a symbolic dimension"


def onnx_accuracy(path: Path, images: np.ndarray, labels: np.ndarray) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    predictions = [int(session.run(["logits"], {"input": x[None]})[0].argmax()) for x in images]
    return float(np.mean(np.array(predictions) == labels))


def datasets(out: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The calibration and held-out crops, written to ``calib.npz`` / ``heldout.npz`` in splitc's --calib form."""
    sets = {"calib": photos.crops(CALIB_COUNT, "train", seed=CALIB_SEED, size=SIZE),
            "heldout": photos.crops(HELDOUT_COUNT, "test", seed=HELDOUT_SEED, size=SIZE)}
    for key, (images, labels) in sets.items():
        np.savez_compressed(out / f"{key}.npz", input=images.astype(np.float32), labels=labels.astype(np.int64))
    return sets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=[*MODELS, "all"], default="all")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--epochs", type=int, help="training epochs (default: vgg 12, resnet 20)")
    parser.add_argument("--per-epoch", type=int, default=1536, help="fresh training crops per epoch")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05, help="peak learning rate (one-cycle schedule)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)

    def log(line: str) -> None:
        print(line, flush=True)

    sets = datasets(args.out)
    report_path = args.out / "accuracy.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else {}
    report["task"] = {"source": "bench/photos.py", "classes": CLASSES, "input": [1, 3, SIZE, SIZE],
                      "calib": {"count": CALIB_COUNT, "split": "train", "seed": CALIB_SEED},
                      "heldout": {"count": HELDOUT_COUNT, "split": "test", "seed": HELDOUT_SEED}}
    for name in MODELS if args.model == "all" else [args.model]:
        model, facts = train(name, args.epochs or EPOCHS[name], args.per_epoch, args.batch, args.lr, args.seed, log)
        path = args.out / f"{name}_photos.onnx"
        export(model, path)
        entry = {
            "onnx": path.name,
            "parameters": sum(p.numel() for p in model.parameters()),
            "macs": macs(model),
            "onnx_bytes": path.stat().st_size,
            "torch": torch.__version__,
            "threads": args.threads,
            **facts,
            "train_region_accuracy": round(accuracy(model, *sets["calib"]), 4),
            "heldout_accuracy_torch": round(accuracy(model, *sets["heldout"]), 4),
            "heldout_accuracy_onnxruntime": round(onnx_accuracy(path, *sets["heldout"]), 4),
        }
        report.setdefault("models", {})[name] = entry
        log(json.dumps({name: entry}, indent=1))
    report_path.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
