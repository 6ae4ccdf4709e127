"""Images as model inputs (``splitc run --input photo.png``): decode, resize, scale to [0, 1]."""

from __future__ import annotations

from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def is_image(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def load_image(path: str | Path, shape: list[int], dtype: str = "float32") -> np.ndarray:
    """An image file as an input of ``shape``: NCHW or NHWC with 1 or 3 channels, values in [0, 1].

    The layout is NHWC when the last dimension is 1 or 3 and the second is not;
    otherwise NCHW. The image is converted to grey or RGB and resized (bilinear).
    """
    from PIL import Image

    if len(shape) != 4:
        raise ValueError(f"an image input needs a 4-d shape (N, C, H, W or N, H, W, C), not {shape}")
    nhwc = shape[3] in (1, 3) and shape[1] not in (1, 3)
    channels, height, width = (shape[3], shape[1], shape[2]) if nhwc else (shape[1], shape[2], shape[3])
    if channels not in (1, 3):
        raise ValueError(f"an image input needs 1 or 3 channels, the model's has {channels}")
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image, np.float32) / 255.0
    pixels = pixels.reshape(height, width, channels)
    batch = pixels[None] if nhwc else pixels.transpose(2, 0, 1)[None]
    return np.repeat(batch, shape[0], axis=0).astype(dtype)
