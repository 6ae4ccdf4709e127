"""Wire codec, JPEG mode: 8-bit symbols of an image-shaped tensor coded as one baseline JPEG.

A tensor is image-shaped when it has 4 dimensions and 1 or 3 channels, either
channels-first (N, C, H, W) or channels-last (N, H, W, C); channels-first wins
when both read. The N images are stacked vertically into one picture of
N*H rows and W columns (greyscale for 1 channel, RGB for 3), so a batch is
still one JPEG. The coding is lossy: the decoder returns symbols close to,
not equal to, the encoder's (the compiler measures what that costs in accuracy).

Pillow (libjpeg) does the coding; the decoder checks the picture's size and
mode against the frame's shape before it decodes any pixel data.
"""

from __future__ import annotations

import io

import numpy as np

MAX_SIDE = 65535  # JPEG's limit on either side of a picture
# splitc's own limit on a JPEG frame's picture (width x height), checked from the
# frame's shape before Pillow reads any byte: 2**25 pixels (32 Mpx, 96 MiB as RGB).
MAX_PIXELS = 2**25
QUALITIES = range(1, 101)


def image_layout(shape) -> str | None:
    """``"nchw"`` or ``"nhwc"`` for an image-shaped tensor, else None."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 4 or min(shape) < 1:
        return None
    if shape[1] in (1, 3):
        n, h, w = shape[0], shape[2], shape[3]
    elif shape[3] in (1, 3):
        n, h, w = shape[0], shape[1], shape[2]
    else:
        return None
    if n * h > MAX_SIDE or w > MAX_SIDE:
        return None
    return "nchw" if shape[1] in (1, 3) else "nhwc"


def pixels(shape) -> int:
    """Width x height of the picture an image-shaped tensor is coded as (0 when not image-shaped)."""
    layout = image_layout(shape)
    if layout is None:
        return 0
    n, a, b, c = (int(d) for d in shape)
    return n * b * c if layout == "nchw" else n * a * b


def _picture(q: np.ndarray, layout: str) -> np.ndarray:
    """(N*H, W) or (N*H, W, 3) uint8 from the tensor."""
    hwc = q.transpose(0, 2, 3, 1) if layout == "nchw" else q
    n, h, w, c = hwc.shape
    picture = np.ascontiguousarray(hwc.reshape(n * h, w, c))
    return picture[:, :, 0] if c == 1 else picture


def _tensor(picture: np.ndarray, shape: tuple, layout: str) -> np.ndarray:
    if layout == "nchw":
        n, c, h, w = shape
        return np.ascontiguousarray(picture.reshape(n, h, w, c).transpose(0, 3, 1, 2))
    return picture.reshape(shape)


def encode(q: np.ndarray, quality: int) -> bytes:
    """The JPEG bytes of ``q`` (uint8, image-shaped) at ``quality`` 1..100."""
    from PIL import Image

    layout = image_layout(q.shape)
    if layout is None:
        raise ValueError(f"JPEG coding needs an image-shaped tensor (N, 1|3, H, W or N, H, W, 1|3), not {q.shape}")
    if int(quality) not in QUALITIES:
        raise ValueError(f"JPEG quality must be 1..100, not {quality}")
    buffer = io.BytesIO()
    Image.fromarray(_picture(np.asarray(q, np.uint8), layout)).save(buffer, "JPEG", quality=int(quality))
    return buffer.getvalue()


def decode(payload, shape: tuple) -> np.ndarray:
    """uint8 symbols of ``shape`` from JPEG bytes; ValueError if they do not hold such a picture."""
    from PIL import Image

    layout = image_layout(shape)
    if layout is None:
        raise ValueError(f"shape {tuple(shape)} is not image-shaped, so it cannot be JPEG-coded")
    channels = shape[1] if layout == "nchw" else shape[3]
    rows, cols = shape[0] * (shape[2] if layout == "nchw" else shape[1]), shape[3] if layout == "nchw" else shape[2]
    want_mode = "L" if channels == 1 else "RGB"
    if rows * cols > MAX_PIXELS:
        raise ValueError(f"a {cols}x{rows} picture is more than the limit of {MAX_PIXELS} pixels")
    try:
        with Image.open(io.BytesIO(bytes(payload)), formats=["JPEG"]) as image:
            if image.size != (cols, rows) or image.mode != want_mode:
                raise ValueError(f"the JPEG holds a {image.size[0]}x{image.size[1]} {image.mode} picture, "
                                 f"the shape needs {cols}x{rows} {want_mode}")
            picture = np.asarray(image.convert(want_mode), np.uint8)
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, struct.error... on corrupt data
        raise ValueError(f"the JPEG payload does not decode ({type(exc).__name__}: {exc})") from exc
    return _tensor(picture, tuple(shape), layout)


def round_trip(q: np.ndarray, quality: int) -> np.ndarray:
    """What the receiver gets for symbols ``q`` (what ``decode(encode(q))`` returns)."""
    return decode(encode(q, quality), tuple(q.shape))
