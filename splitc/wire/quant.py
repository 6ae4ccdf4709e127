"""Wire codec, quantization: float tensors to ``bits``-bit uint8 symbols and back."""

from __future__ import annotations

import numpy as np

from splitc.wire.format import QUANT_BITS


def quantize(x, bits: int, per_channel_axis: int | None = None):
    """Quantize a float tensor to ``bits`` (1..8) bits: returns ``(q, lo, hi)``.

    ``q = floor((x - lo) * ((2**bits - 1) / max(hi - lo, 1e-30)) + 0.5)`` as uint8,
    computed in float32 exactly like the quantizer splitc inserts into edge
    halves, where ``lo, hi`` are the min and max of ``x`` per tensor or, with
    ``per_channel_axis``, per index along that axis (then float32 arrays).
    A constant tensor (``hi == lo``) quantizes to zeros.
    """
    _check_quant_bits(bits)
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot quantize a tensor with NaN or infinite values")
    if per_channel_axis is None:
        if x.size == 0:
            return np.zeros(x.shape, np.uint8), np.float32(0), np.float32(0)
        lo, hi = np.float32(x.min()), np.float32(x.max())
        return _steps(x, lo, hi, bits), lo, hi
    axis = _normalize_axis(per_channel_axis, x.ndim)
    others = tuple(i for i in range(x.ndim) if i != axis)
    if x.size == 0:
        zeros = np.zeros(x.shape[axis], np.float32)
        return np.zeros(x.shape, np.uint8), zeros, zeros.copy()
    lo = x.min(axis=others).astype(np.float32)
    hi = x.max(axis=others).astype(np.float32)
    return _steps(x, _along(lo, axis, x.ndim), _along(hi, axis, x.ndim), bits), lo, hi


def _steps(x, lo, hi, bits):
    levels = np.float32((1 << bits) - 1)
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.all(np.isfinite(np.float32(hi) - np.float32(lo))):
            raise ValueError("the range max - min is not finite in float32: the tensor cannot be quantized")
    scale = levels / np.maximum(hi - lo, np.float32(1e-30))
    return np.floor((x - lo) * scale + np.float32(0.5)).astype(np.uint8)


def dequantize(q, bits: int, lo, hi, per_channel_axis: int | None = None) -> np.ndarray:
    """Inverse of ``quantize``: ``q * ((hi - lo) / (2**bits - 1)) + lo`` in float32.

    Where ``hi == lo`` the tensor (or channel) is constant and decodes to ``lo``.
    """
    _check_quant_bits(bits)
    q = np.asarray(q)
    levels = np.float32((1 << bits) - 1)
    if per_channel_axis is None:
        lo32, hi32 = np.float32(lo), np.float32(hi)
        return (q.astype(np.float32) * ((hi32 - lo32) / levels) + lo32).astype(np.float32)
    axis = _normalize_axis(per_channel_axis, q.ndim)
    lo32 = np.asarray(lo, np.float32)
    hi32 = np.asarray(hi, np.float32)
    if lo32.shape != (q.shape[axis],) or hi32.shape != lo32.shape:
        raise ValueError(f"per-channel lo/hi need shape ({q.shape[axis]},)")
    step = _along((hi32 - lo32) / levels, axis, q.ndim)
    return (q.astype(np.float32) * step + _along(lo32, axis, q.ndim)).astype(np.float32)


def _along(values, axis, ndim):
    """Reshape a per-channel vector to broadcast along ``axis``."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.reshape(values, shape)


def _normalize_axis(axis, ndim):
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"per_channel_axis {axis!r} is out of range for a {ndim}-d tensor")
    return int(axis) % ndim


def _check_quant_bits(bits):
    if bits not in QUANT_BITS:
        raise ValueError(f"bits must be 1..8 for quantized symbols, got {bits!r}")


def _flat_symbols(q, bits, check=True):
    """``q`` as a contiguous flat uint8 array (values checked when ``check``)."""
    arr = np.asarray(q)
    if arr.dtype != np.uint8:
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255):
            raise ValueError("symbols must be integers in [0, 2**bits)")
        arr = arr.astype(np.uint8)
    flat = np.ascontiguousarray(arr).reshape(-1)
    if check and flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"symbol {int(flat.max())} does not fit in {bits} bits")
    return flat
