"""The profile file: ``splitc.profile/1`` (see docs/latency-model.md), and its validation.

Every problem with a profile file raises :class:`ProfileError`, a
``TargetError``: the CLI prints it on one line and exits with code 2.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from splitc.errors import TargetError

SCHEMA = "splitc.profile/1"
_STATS = ("median_ms", "p10_ms", "p90_ms")


class ProfileError(TargetError):
    """A profile file is unreadable, malformed, foreign, or was measured on another model."""


@dataclass
class Profile:
    """A loaded, validated profile; ``data`` is the JSON document."""

    path: Path
    sha256: str
    data: dict

    @property
    def name(self) -> str:
        return str(self.data.get("name") or self.path.stem)

    def node_ms(self) -> dict[str, float]:
        return {name: entry["median_ms"] for name, entry in self.data["nodes"].items()}

    def segment_ms(self, side: str) -> dict[str, float]:
        """Measured ``"prefix"`` or ``"suffix"`` medians keyed by cut tensor."""
        return {name: entry["median_ms"] for name, entry in self.data["segments"][side].items()}


def load_profile(path: str | Path) -> Profile:
    """Read and validate a profile file (the model check happens when it is bound to a graph)."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"profile {path}: cannot be read ({exc.strerror or exc})") from exc
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProfileError(f"profile {path}: not valid JSON ({exc})") from exc
    check_document(data, path)
    return Profile(path, hashlib.sha256(raw).hexdigest(), data)


def check_document(data, path: Path) -> None:
    """Check the schema tag, the required fields and every timing."""
    if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
        raise ProfileError(f"profile {path}: not a splitc profile (no \"schema\" field)")
    if not data["schema"].startswith("splitc.profile/"):
        raise ProfileError(f"profile {path}: not a splitc profile (schema {data['schema']!r})")
    if data["schema"] != SCHEMA:
        raise ProfileError(f"profile {path}: schema {data['schema']!r} is not supported (this splitc reads {SCHEMA})")
    model = _field(data, "model", dict, path)
    _field(model, "sha256", str, path, "model.sha256")
    names = _field(model, "nodes", list, path, "model.nodes")
    if not all(isinstance(n, str) for n in names):
        raise ProfileError(f"profile {path}: malformed: model.nodes must be a list of node names")
    for name, entry in _field(data, "nodes", dict, path).items():
        _check_stats(entry, path, f"nodes[{name!r}]")
    segments = _field(data, "segments", dict, path)
    for side in ("prefix", "suffix"):
        for name, entry in _field(segments, side, dict, path, f"segments.{side}").items():
            _check_stats(entry, path, f"segments.{side}[{name!r}]")
    _check_stats(_field(data, "whole_model", dict, path), path, "whole_model")


def _field(parent: dict, key: str, kind: type, path: Path, label: str | None = None):
    value = parent.get(key)
    if not isinstance(value, kind):
        expected = {dict: "an object", list: "a list", str: "a string"}[kind]
        raise ProfileError(f"profile {path}: malformed: {label or key} is missing or not {expected}")
    return value


def _check_stats(entry, path: Path, label: str) -> None:
    ok = isinstance(entry, dict) and all(
        isinstance(entry.get(k), (int, float)) and not isinstance(entry.get(k), bool)
        and math.isfinite(entry[k]) and entry[k] >= 0 for k in _STATS)
    if not ok:
        raise ProfileError(f"profile {path}: malformed: {label} needs non-negative median_ms, p10_ms and p90_ms")
