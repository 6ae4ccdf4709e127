"""Real cut tensors for the codec benchmark (``bench/codec.py``), 8 images per tensor, and their table.

* trained networks: every intermediate output (conv, ReLU, max-pool, add,
  gemm; at least 512 elements) of ``examples/digits/digits_cnn.onnx`` on the
  first 8 images of its calibration set, and of ``bench/trained/{vgg,resnet}_photos.onnx``
  on the first 8 images of ``bench/trained/calib.npz`` when those files exist;
* a natural-image depthwise + HardSwish block: 8 photographs from
  ``skimage.data`` through a fixed-filter 5x5 depthwise conv (4 Gabor
  orientations, x4 per colour channel), per-channel standardisation with a
  seeded scale and bias, and HardSwish (``dw1``, 8x12x112x112); then a 3x3
  stride-2 depthwise conv (Sobel x, Sobel y, blur, x3 per channel) of that,
  standardised, and HardSwish again (``dw2``, 8x36x56x56). Dense and
  spatially correlated, like the early blocks of a MobileNetV3.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import zstandard
from numpy.lib.stride_tricks import sliding_window_view

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from splitc.wire import codec

REAL_BITS = (4, 8)
PHOTOS = ("astronaut", "coffee", "chelsea", "camera", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")
CUT_OPS = ("Conv", "Relu", "MaxPool", "Add", "Gemm")
IMAGES = 8
MIN_ELEMENTS = 512


def onnx_activations(path: Path, images: np.ndarray, label: str) -> dict[str, np.ndarray]:
    """Every intermediate output of the CUT_OPS nodes of a model, stacked over ``images`` (run one by one)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    names = []
    for node in model.graph.node:
        if node.op_type in CUT_OPS and node.output[0] not in outputs:
            model.graph.output.append(onnx.ValueInfoProto(name=node.output[0]))
            names.append((f"{label} {node.op_type.lower()}{len(names)}", node.output[0]))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    wanted = [name for _, name in names]
    runs = [session.run(wanted, {feed: images[i : i + 1].astype(np.float32)}) for i in range(len(images))]
    result = {}
    for k, (title, _) in enumerate(names):
        tensor = np.concatenate([run[k] for run in runs])
        if tensor.size >= MIN_ELEMENTS:
            result[title] = tensor
    return result


def trained_tensors() -> dict[str, np.ndarray]:
    """Activations of the trained models present on disk (digits always; photos VGG / ResNet if trained)."""
    digits = np.load(ROOT / "examples" / "digits" / "calib.npz")["image"][:IMAGES]
    tensors = onnx_activations(ROOT / "examples" / "digits" / "digits_cnn.onnx", digits, "digits")
    calib = ROOT / "bench" / "trained" / "calib.npz"
    for name in ("vgg", "resnet"):
        model = ROOT / "bench" / "trained" / f"{name}_photos.onnx"
        if model.exists() and calib.exists():
            images = np.load(calib)["input"][:IMAGES]  # (N, 3, 64, 64) crops in [0, 1]
            tensors.update(onnx_activations(model, images, f"{name}-photos"))
    return tensors


def hardswish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3, 0, 6) / 6


def _gabors(size=5):
    half = size // 2
    ys, xs = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float32)
    out = []
    for theta in np.arange(4) * np.pi / 4:
        along = xs * np.cos(theta) + ys * np.sin(theta)
        g = np.exp(-(xs**2 + ys**2) / (2 * 1.2**2)) * np.cos(2 * np.pi * along / 4)
        out.append(g - g.mean())
    return np.stack(out).astype(np.float32)


def _small_filters():
    sobel = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)
    blur = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 16
    return np.stack([sobel, sobel.T, blur])


def depthwise(x: np.ndarray, filters: np.ndarray, stride: int = 1) -> np.ndarray:
    """(N, C, H, W) through ``filters`` (M, k, k) on every channel: (N, C*M, H/stride, W/stride), zero padding."""
    pad = filters.shape[-1] // 2
    windows = sliding_window_view(np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))), filters.shape[-2:], axis=(2, 3))
    windows = windows[:, :, ::stride, ::stride]
    y = np.einsum("nchwij,mij->ncmhw", windows, filters, optimize=True)
    n, c, m, h, w = y.shape
    return y.reshape(n, c * m, h, w).astype(np.float32)


def _standardise(y, rng):
    y = (y - y.mean(axis=(0, 2, 3), keepdims=True)) / (y.std(axis=(0, 2, 3), keepdims=True) + 1e-6)
    channels = y.shape[1]
    return y * rng.uniform(0.8, 2.0, (1, channels, 1, 1)) + rng.uniform(-1.0, 1.0, (1, channels, 1, 1))


def depthwise_tensors(size: int = 112, seed: int = 0) -> dict[str, np.ndarray]:
    """The two HardSwish outputs of the fixed-filter depthwise block on 8 photographs."""
    import skimage.data
    from skimage.color import gray2rgb
    from skimage.transform import resize

    pictures = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        img = gray2rgb(img) if img.ndim == 2 else img[..., :3]
        pictures.append(resize(img, (size, size), anti_aliasing=True).astype(np.float32).transpose(2, 0, 1))
    rng = np.random.default_rng(seed)
    x = (np.stack(pictures) - 0.45) / 0.25
    dw1 = hardswish(_standardise(depthwise(x, _gabors()), rng)).astype(np.float32)
    dw2 = hardswish(_standardise(depthwise(dw1, _small_filters(), stride=2), rng)).astype(np.float32)
    return {"photos dw1 hswish (fixed filters)": dw1, "photos dw2 hswish (fixed filters)": dw2}


def real_tensors() -> dict[str, np.ndarray]:
    """All real tensors of the benchmark, by name."""
    return {**trained_tensors(), **depthwise_tensors()}


# ----------------------------------------------------------------------------- measurement


def entropy_bytes(q):
    p = np.bincount(q.ravel(), minlength=256).astype(np.float64)
    p = p[p > 0] / q.size
    return float(-(p * np.log2(p)).sum() * q.size / 8)


def median_time(fn, repeats):
    """Median of ``repeats`` timed runs (after one warm-up run)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def bitwise_unpack(payload, n, bits):
    """The packed-mode decoder the codec had before its compiled kernel (np.unpackbits, one bit per byte)."""
    raw = np.unpackbits(np.frombuffer(payload, np.uint8), count=n * bits).reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (raw.astype(np.uint16) @ weights).astype(np.uint8)


def measure_real(name, x, bits, repeats):
    q, lo, hi = codec.quantize(x, bits)
    n, mb = q.size, q.size / 1e6
    frame = codec.encode(q, bits, lo, hi)
    decoded, meta = codec.decode(frame)
    assert np.array_equal(decoded, q)
    packed = codec.encode(q, bits, lo, hi, coder="none")
    payload = packed[len(packed) - (n * bits + 7) // 8 :]
    assert np.array_equal(bitwise_unpack(payload, n, bits).reshape(q.shape), q)
    z = zstandard.ZstdCompressor(level=3).compress(q.tobytes())
    row = {
        "tensor": name, "shape": list(q.shape), "elements": n, "bits": bits, "entropy": entropy_bytes(q),
        "zstd3": len(z), "ours": len(frame), "packed": len(packed), "mode": meta.mode, "filter": meta.filter,
        "classes": meta.classes, "thresholds": list(meta.thresholds),
        "enc_mbps": mb / median_time(lambda: codec.encode(q, bits, lo, hi), repeats),
        "dec_mbps": mb / median_time(lambda: codec.decode(frame), repeats),
        "packed_dec_before_mbps": mb / median_time(lambda: bitwise_unpack(payload, n, bits), repeats),
        "packed_dec_after_mbps": mb / median_time(lambda: codec.decode(packed), repeats),
    }
    row["ours_over_zstd"] = row["ours"] / row["zstd3"]
    row["ours_over_entropy"] = row["ours"] / row["entropy"]
    return row


def run_real(repeats):
    rows = []
    tensors = real_tensors()
    for bits in REAL_BITS:
        for name, x in tensors.items():
            row = measure_real(name, x, bits, repeats)
            rows.append(row)
            print(f"c={bits} {name:36s} n={row['elements']:8d} ours/zstd={row['ours_over_zstd']:.3f} "
                  f"{row['mode']}/{row['filter']}/{row['classes']} enc={row['enc_mbps']:.0f} "
                  f"dec={row['dec_mbps']:.0f} packed {row['packed_dec_before_mbps']:.0f}->"
                  f"{row['packed_dec_after_mbps']:.0f} MB/s", flush=True)
    return rows


def real_summary(rows):
    out = {}
    for bits in REAL_BITS:
        at = [r for r in rows if r["bits"] == bits]
        large = [r for r in at if r["elements"] >= 100_000]
        out[f"c{bits}"] = {
            "smaller_than_zstd3": sum(r["ours"] < r["zstd3"] for r in at), "tensors": len(at),
            "worst_ours_over_zstd": max(r["ours_over_zstd"] for r in at),
            "worst_large_ours_over_zstd": max((r["ours_over_zstd"] for r in large), default=None),
            "min_large_dec_mbps": min((r["dec_mbps"] for r in large), default=None),
            "never_larger_than_packed": all(r["ours"] <= r["packed"] for r in at),
        }
    return out


def real_markdown(rows, summary, repeats):
    lines = [
        "## Real tensors (c = 4 and 8)",
        "",
        ("Activations of trained models and a natural-image depthwise + HardSwish block, 8 images per tensor "
         "(`bench/codec_real.py`), quantized per tensor with the codec's own quantizer. H0 = order-0 entropy "
         "bound of the symbols; zstd -3 runs on the symbols, one byte each; `ours` is the whole frame (header, "
         "shape, range, code section). Mode: `mode/filter/classes`. Speeds: single thread, numba backend, "
         f"median of {repeats} runs, MB/s of symbols. Packed decode: before = the bitwise numpy unpacker the "
         "codec used before (np.unpackbits), after = `decode` of the packed frame now."),
        "",
    ]
    for bits in REAL_BITS:
        s = summary[f"c{bits}"]
        large = "" if s["worst_large_ours_over_zstd"] is None else (
            f"; tensors of >= 100k elements: worst ours/zstd {s['worst_large_ours_over_zstd']:.3f}, slowest decode "
            f"{s['min_large_dec_mbps']:.0f} MB/s")
        lines.append(f"* c = {bits}: smaller than zstd -3 on {s['smaller_than_zstd3']} of {s['tensors']} tensors, "
                     f"worst ours/zstd {s['worst_ours_over_zstd']:.3f}{large}; never larger than packed: "
                     f"{s['never_larger_than_packed']}.")
    header = ("| c | tensor | shape | elements | H0 B | zstd-3 B | ours B | ours/zstd | ours/H0 | mode "
              "| enc MB/s | dec MB/s | packed dec before | packed dec after |")
    lines += ["", header, "|" + "---|" * 14]
    for r in rows:
        lines.append(
            f"| {r['bits']} | {r['tensor']} | {'x'.join(map(str, r['shape']))} | {r['elements']} | {r['entropy']:.0f} "
            f"| {r['zstd3']} | {r['ours']} | {r['ours_over_zstd']:.3f} | {r['ours_over_entropy']:.3f} "
            f"| {r['mode']}/{r['filter']}/{r['classes']} | {r['enc_mbps']:.0f} | {r['dec_mbps']:.0f} "
            f"| {r['packed_dec_before_mbps']:.0f} | {r['packed_dec_after_mbps']:.0f} |")
    lines.append("")
    return lines
