"""Build the real-model conformance suite: architectures written in torch, exported as exporters emit them.

    pip install torch==2.13.0
    python tests/models/make_models.py          # writes tests/models/*.onnx

The files are committed (each well under 1 MB, random weights), so the tests
need no torch. Each model reproduces patterns that torch, paddle2onnx and
tf2onnx really write: shapes computed from ``Shape → Gather → Concat →
Reshape``, ``Range`` anchors, ``Resize`` to sizes taken from ``Shape``,
bidirectional ``LSTM``/``GRU``, ``Erf``-GELU attention with a dynamic sequence
length, ``int64`` token inputs, ``TopK``/``NonZero`` post-processing, NHWC
``Transpose`` sandwiches, and opsets 11 to 21.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, version_converter

HERE = Path(__file__).resolve().parent


def _torch_models():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class ConvBN(nn.Sequential):
        def __init__(self, cin, cout, k=3, s=1):
            super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.Hardswish())

    class YoloTiny(nn.Module):
        """Backbone, an FPN with Resize by scale and by sizes, and a decoding head with Range/meshgrid anchors."""

        def __init__(self, classes=3, anchors=2):
            super().__init__()
            self.na, self.no = anchors, classes + 5
            self.s1 = nn.Sequential(ConvBN(3, 8, s=2), ConvBN(8, 16, s=2))
            self.s2 = nn.Sequential(ConvBN(16, 24, s=2), ConvBN(24, 24))
            self.s3 = nn.Sequential(ConvBN(24, 32, s=2), ConvBN(32, 32))
            self.lat = nn.Conv2d(32, 24, 1)
            self.heads = nn.ModuleList([nn.Conv2d(24, self.na * self.no, 1), nn.Conv2d(32, self.na * self.no, 1)])
            self.register_buffer("anchor", torch.tensor([[10.0, 13.0], [16.0, 30.0]]))

        def decode(self, p, stride):
            b, _, h, w = p.shape
            p = p.view(b, self.na, self.no, h, w).permute(0, 1, 3, 4, 2)
            ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                    indexing="ij")
            grid = torch.stack((xs, ys), 2).view(1, 1, h, w, 2)
            xy, wh, rest = p.split((2, 2, self.no - 4), dim=4)
            xy = (xy.sigmoid() * 2 - 0.5 + grid) * stride
            wh = (wh.sigmoid() * 2) ** 2 * self.anchor.view(1, self.na, 1, 1, 2)
            return torch.cat((xy, wh, rest.sigmoid()), 4).view(b, -1, self.no)

        def forward(self, x):
            c2 = self.s2(self.s1(x))
            c3 = self.s3(c2)
            up = F.interpolate(self.lat(c3), scale_factor=2.0, mode="nearest")
            p2 = c2 + F.interpolate(up, size=c2.shape[2:], mode="nearest")
            return torch.cat([self.decode(self.heads[0](p2), 8.0), self.decode(self.heads[1](c3), 16.0)], 1)

    class DBNet(nn.Module):
        """A text detector: an FPN whose upsampling goes to sizes read from Shape, then a probability map."""

        def __init__(self):
            super().__init__()
            self.c1, self.c2, self.c3 = ConvBN(3, 8, s=2), ConvBN(8, 16, s=2), ConvBN(16, 24, s=2)
            self.l1, self.l2, self.l3 = nn.Conv2d(8, 8, 1), nn.Conv2d(16, 8, 1), nn.Conv2d(24, 8, 1)
            self.head = nn.Sequential(nn.Conv2d(24, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 1, 2, 2))

        def forward(self, x):
            a = self.c1(x)
            b = self.c2(a)
            c = self.c3(b)
            p3 = self.l3(c)
            p2 = self.l2(b) + F.interpolate(p3, size=b.shape[2:], mode="bilinear", align_corners=False)
            p1 = self.l1(a) + F.interpolate(p2, size=a.shape[2:], mode="bilinear", align_corners=False)
            f = torch.cat([p1, F.interpolate(p2, size=p1.shape[2:]), F.interpolate(p3, size=p1.shape[2:])], 1)
            return torch.sigmoid(self.head(f))

    class CRNN(nn.Module):
        """CNN → Reshape to a computed shape → Transpose → bidirectional LSTM and GRU → Softmax (CTC)."""

        def __init__(self, classes=11):
            super().__init__()
            self.cnn = nn.Sequential(ConvBN(1, 8), nn.MaxPool2d(2), ConvBN(8, 16), nn.MaxPool2d((2, 1)))
            self.lstm = nn.LSTM(16 * 4, 24, bidirectional=True, batch_first=False)
            self.gru = nn.GRU(48, 16, bidirectional=True)
            self.fc = nn.Linear(32, classes)

        def forward(self, x):
            f = self.cnn(x)
            b, c, h, w = f.shape
            seq = f.reshape(b, c * h, w).permute(2, 0, 1)
            seq, _ = self.lstm(seq)
            seq, _ = self.gru(seq)
            return self.fc(seq).softmax(-1)

    class Encoder(nn.Module):
        """Transformer encoder layers whose reshapes read the (dynamic) sequence length from Shape."""

        def __init__(self, d=32, heads=4, layers=2):
            super().__init__()
            self.d, self.h = d, heads
            self.inp = nn.Linear(16, d)
            self.qkv = nn.ModuleList([nn.Linear(d, 3 * d) for _ in range(layers)])
            self.out = nn.ModuleList([nn.Linear(d, d) for _ in range(layers)])
            self.ff = nn.ModuleList([nn.Sequential(nn.Linear(d, 64), nn.GELU(), nn.Linear(64, d))
                                     for _ in range(layers)])
            self.n1 = nn.ModuleList([nn.LayerNorm(d) for _ in range(layers)])
            self.n2 = nn.ModuleList([nn.LayerNorm(d) for _ in range(layers)])
            self.cls = nn.Linear(d, 5)

        def forward(self, x):
            x = self.inp(x)
            b, t, _ = x.shape
            for qkv, out, ff, n1, n2 in zip(self.qkv, self.out, self.ff, self.n1, self.n2):
                q, k, v = qkv(x).reshape(b, t, 3, self.h, self.d // self.h).permute(2, 0, 3, 1, 4)
                att = (q @ k.transpose(-1, -2) / (self.d // self.h) ** 0.5).softmax(-1)
                x = n1(x + out((att @ v).transpose(1, 2).reshape(b, t, self.d)))
                x = n2(x + ff(x))
            return self.cls(x.mean(1))

    class TokenModel(nn.Module):
        """int64 token ids → Gather embeddings; a padding mask computed from the ids."""

        def __init__(self, vocab=50, d=16):
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.proj = nn.Linear(d, d)
            self.cls = nn.Linear(d, 4)

        def forward(self, ids):
            mask = (ids > 0).unsqueeze(-1).float()
            h = torch.relu(self.proj(self.emb(ids))) * mask
            return self.cls(h.sum(1) / mask.sum(1).clamp(min=1.0))

    class PostProcess(nn.Module):
        """A classifier whose outputs go through TopK and NonZero (data-dependent shapes)."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(ConvBN(3, 8, s=2), ConvBN(8, 16, s=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                      nn.Linear(16, 20))

        def forward(self, x):
            scores = self.body(x).softmax(-1)
            top, idx = scores.topk(5, dim=-1)
            keep = torch.nonzero(scores[0] > 0.05)
            return top, idx, keep

    return torch, {
        "yolo_head": (YoloTiny(), {"images": (1, 3, 64, 64)}, {"images": {0: "batch", 2: "height", 3: "width"}}),
        "dbnet_fpn": (DBNet(), {"image": (1, 3, 64, 96)}, {"image": {0: "batch", 2: "height", 3: "width"}}),
        "crnn_ctc": (CRNN(), {"line": (1, 1, 16, 48)}, {"line": {0: "batch", 3: "width"}}),
        "encoder_dynamic_seq": (Encoder(), {"frames": (1, 10, 16)}, {"frames": {0: "batch", 1: "seq"}}),
        "token_ids": (TokenModel(), {"ids": (1, 12)}, {"ids": {0: "batch", 1: "seq"}}),
        "topk_nonzero": (PostProcess(), {"image": (1, 3, 32, 32)}, {"image": {0: "batch"}}),
    }


def export_torch(opsets=(11, 13, 17)) -> list[Path]:
    torch, models = _torch_models()
    torch.manual_seed(0)
    written = []
    for name, (module, inputs, dynamic) in models.items():
        module.eval()
        for m in module.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        args = tuple(torch.randint(0, 50, shape) if name == "token_ids" else torch.randn(shape)
                     for shape in inputs.values())
        opset_list = opsets if name in ("yolo_head", "crnn_ctc") else (17,)
        for opset in opset_list:
            buffer = io.BytesIO()
            torch.onnx.export(module, args, buffer, input_names=list(inputs), opset_version=opset,
                              dynamic_axes=dynamic or None, dynamo=False)
            model = onnx.load_from_string(buffer.getvalue())
            suffix = "" if opset == 17 else f"_opset{opset}"
            path = HERE / f"{name}{suffix}.onnx"
            onnx.save(model, path)
            written.append(path)
    base = onnx.load(HERE / "yolo_head.onnx")  # opset 21 by conversion: exporters at 21 write the same ops
    converted = version_converter.convert_version(base, 21)
    onnx.save(converted, HERE / "yolo_head_opset21.onnx")
    written.append(HERE / "yolo_head_opset21.onnx")
    return written


def nhwc_sandwich() -> onnx.ModelProto:
    """What tf2onnx writes for a Keras CNN: NHWC input, Transpose → Conv → Transpose around every conv."""
    rng = np.random.default_rng(0)
    nodes, inits = [], []

    def weight(name, shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name))
        return name

    x = "input_1"
    cin = 3
    for i, cout in enumerate([8, 16, 16]):
        nodes += [
            helper.make_node("Transpose", [x], [f"t{i}_nchw"], perm=[0, 3, 1, 2], name=f"conv{i}/transpose_in"),
            helper.make_node("Conv", [f"t{i}_nchw", weight(f"w{i}", [cout, cin, 3, 3]), weight(f"b{i}", [cout])],
                             [f"c{i}"], pads=[1, 1, 1, 1], strides=[2, 2] if i else [1, 1], name=f"conv{i}/Conv2D"),
            helper.make_node("Transpose", [f"c{i}"], [f"c{i}_nhwc"], perm=[0, 2, 3, 1], name=f"conv{i}/transpose_out"),
            helper.make_node("Relu", [f"c{i}_nhwc"], [f"r{i}"], name=f"conv{i}/Relu"),
        ]
        x, cin = f"r{i}", cout
    shape = helper.make_tensor("flat_shape", TensorProto.INT64, [2], [1, -1])
    inits.append(shape)
    nodes += [
        helper.make_node("ReduceMean", [x], ["pooled"], axes=[1, 2], keepdims=0, name="global_pool"),
        helper.make_node("Reshape", ["pooled", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", weight("fc", [16, 6])], ["logits"], name="dense/MatMul"),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1, name="dense/Softmax"),
    ]
    graph = helper.make_graph(nodes, "tf2onnx", [helper.make_tensor_value_info("input_1", TensorProto.FLOAT,
                                                                               ["unk__0", 32, 32, 3])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["unk__1", 6])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    onnx.checker.check_model(model)
    return model


def float16_copy(name: str) -> Path:
    """A float16 model (inputs and outputs too), as converted for Jetson-class GPUs."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(HERE / f"{name}.onnx"), keep_io_types=False)
    path = HERE / f"{name}_fp16.onnx"
    onnx.save(model, path)
    return path


def main() -> int:
    written = export_torch()
    written.append(float16_copy("dbnet_fpn"))
    onnx.save(nhwc_sandwich(), HERE / "nhwc_tf2onnx.onnx")
    written.append(HERE / "nhwc_tf2onnx.onnx")
    for path in written:
        print(f"{path.name}: {path.stat().st_size / 1e3:.1f} KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
