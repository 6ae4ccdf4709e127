"""The numerical half of channel pruning: consumer design matrices, channel selection and the refit.

A consumer of a pruned tensor ``x`` (``N, C, ...``) is seen as a linear map per output row:

    y[r, o] = sum_c sum_k  P[r, c, k] * W[o, c, k]  +  b[o]

where ``P`` holds, for each row ``r``, the ``K`` input values channel ``c`` contributes to it: a
convolution's receptive field (im2col, one row per output position), or, for a Gemm behind a Flatten,
the block of ``K = prod(spatial)`` flattened features of channel ``c`` (one row per sample). Pruning
channel ``c`` drops ``P[:, c, :]`` and ``W[:, c, :]``; everything below works on this form.

Selection is ThiNet's greedy (Luo et al., ICCV 2017): on sampled ``(row, output)`` entries, remove one
channel at a time, the one whose contribution added to those already removed has the least energy. The
contributions are centred (their mean over rows subtracted) because the consumer's bias absorbs a
removed channel's mean contribution, so a constant (dead) channel costs nothing. The greedy sees the
channels' joint effect (two channels that cancel are removed together), which a per-channel norm
criterion does not, and costs one ``(C, m)`` matrix-vector product per removed channel.

The refit (He et al., ICCV 2017, second step) solves the consumer's weights on the kept channels by
ridge-regularised least squares, on centred data, so that its pre-activation outputs match those of the
unpruned model; the bias is then the mean residual. Without refit, the consumer keeps its weights and
its bias takes the removed channels' mean contribution.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import scipy.linalg

MAX_ROWS = 16384  # rows sampled for selection and refit (at least 3 per fitted weight below this)
MIN_ROWS = 2048
SELECTION_ENTRIES = 4096  # sampled (row, output) entries of ThiNet's greedy


class FitError(ValueError):
    """The refit cannot be solved (too few rows, a singular or non-finite system)."""


@dataclass(frozen=True)
class ConvGeometry:
    """Strides, dilations, leading pads and kernel shape of a convolution, per spatial axis."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # leading pad of each spatial axis (trailing pads are implied by the output size)


def conv_geometry(node, kernel: tuple[int, ...], in_spatial: tuple[int, ...],
                  out_spatial: tuple[int, ...]) -> ConvGeometry:
    """The geometry of Conv ``node`` (an ``onnx.NodeProto``), ``auto_pad`` resolved."""
    attrs = {a.name: a for a in node.attribute}
    rank = len(kernel)
    strides = tuple(attrs["strides"].ints) if "strides" in attrs else (1,) * rank
    dilations = tuple(attrs["dilations"].ints) if "dilations" in attrs else (1,) * rank
    auto_pad = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for k, s, d, i, o in zip(kernel, strides, dilations, in_spatial, out_spatial):
            total = max((o - 1) * s + (k - 1) * d + 1 - i, 0)
            pads.append(total // 2 if auto_pad == "SAME_UPPER" else total - total // 2)
        lead = tuple(pads)
    elif auto_pad == "VALID":
        lead = (0,) * rank
    else:
        lead = tuple(attrs["pads"].ints[:rank]) if "pads" in attrs else (0,) * rank
    return ConvGeometry(tuple(kernel), strides, dilations, lead)


def sample_rows(total: int, features: int, seed: int = 0) -> np.ndarray:
    """Sorted row indices: all rows, or a seeded sample of ``max(3 * features, MIN_ROWS)`` capped at MAX_ROWS."""
    want = min(total, MAX_ROWS, max(3 * features, MIN_ROWS))
    if want >= total:
        return np.arange(total)
    return np.sort(np.random.default_rng(seed).choice(total, size=want, replace=False))


def conv_patches(x: np.ndarray, geometry: ConvGeometry, out_spatial: tuple[int, ...],
                 rows: np.ndarray) -> np.ndarray:
    """``P`` of a convolution for the given rows (``n * prod(out_spatial) + position``): ``(R, C, K)``."""
    n_idx, position = np.divmod(rows, int(np.prod(out_spatial)))
    out_coords = np.unravel_index(position, out_spatial)
    offsets = np.array(list(itertools.product(*[range(k) for k in geometry.kernel])), dtype=np.int64)
    coords, pad_width = [], [(0, 0), (0, 0)]
    for axis, size in enumerate(x.shape[2:]):
        lead = geometry.pads[axis]
        coord = (out_coords[axis][:, None] * geometry.strides[axis]
                 + offsets[:, axis][None, :] * geometry.dilations[axis])  # (R, K), in padded coordinates
        pad_width.append((lead, max(0, int(coord.max(initial=0)) + 1 - lead - size)))
        coords.append(coord[:, None, :])
    padded = np.pad(x, pad_width)
    channels = np.arange(x.shape[1])[None, :, None]
    return padded[(n_idx[:, None, None], channels, *coords)]


def conv_targets(y: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A convolution's outputs ``(N, O, *spatial)`` at the given rows: ``(R, O)``."""
    n, o = y.shape[:2]
    return y.reshape(n, o, -1).transpose(0, 2, 1).reshape(-1, o)[rows]


def select_channels(patches: np.ndarray, weights: np.ndarray, keep: int, seed: int = 0) -> np.ndarray:
    """ThiNet's greedy: the ``keep`` channels (sorted) whose removal leaves the least centred error."""
    rows, channels, _ = patches.shape
    if keep >= channels:
        return np.arange(channels)
    outputs = weights.shape[0]
    rng = np.random.default_rng(seed)
    m = min(rows * outputs, SELECTION_ENTRIES)
    entry_rows, entry_outs = rng.integers(rows, size=m), rng.integers(outputs, size=m)
    contrib = np.empty((channels, m))
    for start in range(0, m, 512):  # bounded (512, C, K) temporaries
        sl = slice(start, start + 512)
        contrib[:, sl] = np.einsum("eck,eck->ce", patches[entry_rows[sl]], weights[entry_outs[sl]])
    means = np.einsum("ck,ock->co", patches.mean(axis=0, dtype=np.float64), weights)
    contrib -= means[:, entry_outs]
    energy = np.einsum("ce,ce->c", contrib, contrib)
    removed_sum = np.zeros(m)
    alive = np.ones(channels, dtype=bool)
    for _ in range(channels - keep):
        score = energy + 2.0 * (contrib @ removed_sum)
        score[~alive] = np.inf
        best = int(np.argmin(score))
        alive[best] = False
        removed_sum += contrib[best]
    return np.flatnonzero(alive)


def relative_error(predicted: np.ndarray, target: np.ndarray) -> float:
    """``||predicted - target|| / ||target||`` (the absolute error when the target is zero)."""
    scale = float(np.linalg.norm(target))
    error = float(np.linalg.norm(predicted - target))
    return error / scale if scale > 0 else error


def bias_corrected(patches: np.ndarray, weights: np.ndarray, bias: np.ndarray, kept: np.ndarray,
                   targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Pruning without refit: kept weights, the bias plus the removed channels' mean contribution, error."""
    removed = np.setdiff1d(np.arange(patches.shape[1]), kept)
    new_bias = bias.astype(np.float64)
    if len(removed):
        new_bias = new_bias + _apply(patches[:, removed], weights[:, removed]).mean(axis=0)
    kept_w = weights[:, kept]
    return kept_w, new_bias, relative_error(_apply(patches[:, kept], kept_w) + new_bias, targets)


def _apply(patches: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``sum_c sum_k P[r, c, k] W[o, c, k]``: ``(R, O)`` in float64."""
    flat_p = patches.reshape(len(patches), -1).astype(np.float64)
    return flat_p @ weights.reshape(len(weights), -1).T.astype(np.float64)


def refit(patches: np.ndarray, targets: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares weights ``(O, C', K)`` and bias ``(O,)`` mapping ``patches`` to ``targets``, and the error.

    Ridge-regularised normal equations on centred data, ``lambda = ridge * mean(diag(F^T F))``; raises
    ``FitError`` with fewer rows than unknowns per output, or when the system cannot be solved.
    """
    rows, channels, k = patches.shape
    features = channels * k
    if rows <= features:
        raise FitError(f"{rows} calibration rows for {features + 1} unknowns per output")
    f = patches.reshape(rows, features).astype(np.float64)
    y = targets.astype(np.float64)
    f_mean, y_mean = f.mean(axis=0), y.mean(axis=0)
    f -= f_mean
    gram = f.T @ f
    scale = float(np.trace(gram)) / features
    gram[np.diag_indices_from(gram)] += ridge * (scale if scale > 0 else 1.0)
    try:
        solution = scipy.linalg.solve(gram, f.T @ (y - y_mean), assume_a="pos", check_finite=True)
    except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, ValueError) as exc:
        raise FitError(f"the least-squares system cannot be solved ({exc})") from exc
    if not np.all(np.isfinite(solution)):
        raise FitError("the least-squares solution is not finite")
    bias = y_mean - f_mean @ solution
    error = relative_error((f + f_mean) @ solution + bias, y)
    return solution.T.reshape(-1, channels, k), bias, error
