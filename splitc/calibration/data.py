"""Calibration data: the samples (and optional labels) the accuracy bound is measured on, from an ``.npz``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError


class CalibrationWarning(UserWarning):
    """The calibration data cannot support the bound asked for, or is degenerate."""


class CalibrationError(SplitcError):
    """The calibration data is missing, malformed, or does not fit the model."""


@dataclass
class CalibrationSet:
    samples: list[dict[str, np.ndarray]]
    labels: np.ndarray | None
    sha256: str


def load_npz(path: str | Path, inputs: list[dict]) -> CalibrationSet:
    """Read an ``.npz`` keyed by the model's input names (plus optional ``labels``)."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"--calib {path}: no such file")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds a single array, not named arrays")
        with data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError) as exc:
        raise CalibrationError(f"--calib {path}: not a readable .npz file ({exc})") from exc
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return _split_samples(arrays, inputs, digest, str(path))


def _split_samples(arrays: dict, inputs: list[dict], digest: str, label: str) -> CalibrationSet:
    missing = [i["name"] for i in inputs if i["name"] not in arrays]
    if missing:
        raise CalibrationError(f"--calib {label}: no array for model input {missing[0]!r} (has {sorted(arrays)})")
    batch = inputs[0]["shape"][0] if inputs[0]["shape"] else 1
    counts = {len(arrays[i["name"]]) for i in inputs}
    if len(counts) != 1:
        raise CalibrationError(f"--calib {label}: the input arrays hold different numbers of samples")
    (count,) = counts
    if count < batch or count % batch:
        raise CalibrationError(f"--calib {label}: {count} samples do not fill batches of {batch}")
    samples = []
    for start in range(0, count, batch):
        sample = {}
        for spec in inputs:
            array = np.asarray(arrays[spec["name"]][start : start + batch], dtype=spec["dtype"])
            if list(array.shape) != list(spec["shape"]):
                raise CalibrationError(
                    f"--calib {label}: samples of {spec['name']!r} have shape {list(array.shape)}, "
                    f"the model wants {spec['shape']}"
                )
            if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
                rows = np.isfinite(array).reshape(len(array), -1) if array.ndim else np.isfinite(array).reshape(1, 1)
                bad = start + int(np.argmax(~rows.all(axis=1)))
                raise CalibrationError(f"--calib {label}: sample {bad} of input {spec['name']!r} holds NaN or "
                                       f"infinite values")
            sample[spec["name"]] = array
        samples.append(sample)
    labels = arrays.get("labels")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(labels) != count:
            raise CalibrationError(f"--calib {label}: {len(labels)} labels for {count} samples")
    return CalibrationSet(samples, labels, digest)
