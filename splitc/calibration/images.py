"""Calibration data from a folder of images, with a documented preprocessing.

``--calib DIR`` reads every .png/.jpg/.jpeg/.bmp file below DIR (sorted by
path). Each image is converted to RGB (or grey for a 1-channel input),
resized to the input's spatial size, scaled to [0, 1] (divided by ``scale``,
255 by default), normalised per channel with ``mean`` and ``std``, and laid
out as ``nchw`` or ``nhwc``. Images in sub-folders whose names are whole
numbers get those numbers as labels.

``--preprocess`` must say how, e.g.
``mean=0.485/0.456/0.406,std=0.229/0.224/0.225,layout=nchw,scale=255``, or
``none`` for the defaults (pixels / 255, no normalisation). The compile stores
it in ``plan.json`` (``preprocess``), and ``splitc run``, ``EdgeClient`` and
``Pipeline`` prepare image inputs the same way (``splitc.runtime.image_input``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitc.calibration.data import CalibrationError, CalibrationSet

SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass
class Preprocess:
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: str = "nchw"
    scale: float = 255.0

    @classmethod
    def parse(cls, text: str | None) -> "Preprocess":
        """``key=value`` pairs joined by commas; lists joined by '/'."""
        result = cls()
        if (text or "").strip().lower() == "none":
            return result
        for item in filter(None, (text or "").split(",")):
            key, sep, value = item.partition("=")
            try:
                if key in ("mean", "std"):
                    setattr(result, key, tuple(float(v) for v in value.split("/")))
                elif key == "scale":
                    result.scale = float(value)
                elif key == "layout" and value.lower() in ("nchw", "nhwc"):
                    result.layout = value.lower()
                else:
                    raise ValueError(item)
            except ValueError as exc:
                raise CalibrationError(
                    f"bad --preprocess item {item!r}: use mean=a/b/c, std=a/b/c, layout=nchw|nhwc, scale=255"
                ) from exc
            if not sep:
                raise CalibrationError(f"bad --preprocess item {item!r}: expected key=value")
        return result


    def to_json(self) -> dict:
        """The form ``plan.json`` stores (``preprocess``) and the runtime reads."""
        return {"mean": list(self.mean), "std": list(self.std), "layout": self.layout, "scale": self.scale}


IMAGENET = "mean=0.485/0.456/0.406,std=0.229/0.224/0.225,scale=255"


def require(folder: str | Path, text: str | None) -> "Preprocess":
    """The preprocessing of an image folder, which must be given: guessing it silently skews the accuracy."""
    if text is None:
        raise CalibrationError(
            f"--calib {folder} is a folder of images: say how the model expects them with --preprocess, e.g. "
            f"--preprocess {IMAGENET} (ImageNet), or --preprocess none for pixels / 255 without normalisation")
    return Preprocess.parse(text)


def _geometry(shape: list[int], layout: str) -> tuple[int, int, int]:
    if len(shape) != 4:
        raise CalibrationError(f"image calibration needs a 4-d input, the model's has shape {shape}")
    return (shape[1], shape[2], shape[3]) if layout == "nchw" else (shape[3], shape[1], shape[2])


def load_image(path: Path, channels: int, height: int, width: int, prep: Preprocess) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            array = np.asarray(image, dtype=np.float32) / np.float32(prep.scale)
    except OSError as exc:
        raise CalibrationError(f"--calib: cannot read image {path}: {exc}") from exc
    array = array.reshape(height, width, channels)
    array = (array - np.asarray(prep.mean, np.float32)) / np.asarray(prep.std, np.float32)
    return array.transpose(2, 0, 1) if prep.layout == "nchw" else array


def load_folder(folder: str | Path, inputs: list[dict], prep: Preprocess) -> CalibrationSet:
    folder = Path(folder)
    if len(inputs) != 1:
        raise CalibrationError("--calib with a folder of images needs a model with exactly one input")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    if not files:
        raise CalibrationError(f"--calib {folder}: no images ({', '.join(SUFFIXES)}) found")
    spec = inputs[0]
    channels, height, width = _geometry(spec["shape"], prep.layout)
    digest = hashlib.sha256(repr(prep).encode())
    samples, labels = [], []
    for path in files:
        digest.update(path.read_bytes())
        array = load_image(path, channels, height, width, prep)
        samples.append({spec["name"]: array[None].astype(spec["dtype"])})
        labels.append(int(path.parent.name) if path.parent.name.isdigit() and path.parent != folder else -1)
    known = np.array(labels) >= 0
    label_array = np.array(labels, dtype=np.int64) if known.all() else None
    return CalibrationSet(samples, label_array, digest.hexdigest())
