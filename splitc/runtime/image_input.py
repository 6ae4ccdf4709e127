"""Images as model inputs (``splitc run --input photo.png``): decode, resize, then prepare.

Preparation follows the plan's ``preprocess`` (``--preprocess`` at compile
time: divide by ``scale``, subtract ``mean``, divide by ``std``, per channel,
in ``layout``); a plan without one gets pixels / 255.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(path: str | Path, shape: list[int], dtype: str = "float32",
               preprocess: dict | None = None) -> np.ndarray:
    """An image file as an input of ``shape``: NCHW or NHWC with 1 or 3 channels, prepared by ``preprocess``.

    Without ``preprocess`` the values are pixels / 255 and the layout is NHWC
    when the last dimension is 1 or 3 and the second is not, otherwise NCHW.
    The image is converted to grey or RGB and resized (bilinear).
    """
    from PIL import Image

    if len(shape) != 4:
        raise ValueError(f"an image input needs a 4-d shape (N, C, H, W or N, H, W, C), not {shape}")
    prep = preprocess or {}
    nhwc = prep["layout"] == "nhwc" if "layout" in prep else shape[3] in (1, 3) and shape[1] not in (1, 3)
    channels, height, width = (shape[3], shape[1], shape[2]) if nhwc else (shape[1], shape[2], shape[3])
    if channels not in (1, 3):
        raise ValueError(f"an image input needs 1 or 3 channels, the model's has {channels}")
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image, np.float32) / np.float32(prep.get("scale", 255.0))
    pixels = pixels.reshape(height, width, channels)
    pixels = (pixels - np.asarray(prep.get("mean", [0.0]), np.float32)) / np.asarray(prep.get("std", [1.0]), np.float32)
    batch = pixels[None] if nhwc else pixels.transpose(2, 0, 1)[None]
    return np.repeat(batch, shape[0], axis=0).astype(dtype)


def prepare_feeds(feeds: dict, specs: list[dict], preprocess: dict | None) -> dict:
    """``feeds`` with image files (a path, or a str naming a file such as ``photo.png``) loaded as their input."""
    prepared = dict(feeds)
    for spec in specs:
        value = feeds.get(spec["name"])
        if isinstance(value, (str, Path)) and is_image(value):
            prepared[spec["name"]] = load_image(value, spec["shape"], spec["dtype"], preprocess)
    return prepared
