"""The plans of an output directory: one (``plan.json``) or several (``plans.json``).

A single-bandwidth compile writes ``OUT/plan.json`` beside its halves; its
plan id is ``default``. A bandwidth-range compile writes ``OUT/plans.json``,
an index of plans ``OUT/plans/<id>/``, each optimal on one bandwidth interval
(see docs/plan.md). Each plan's ``crc`` is the CRC-32 of its ``plan.json``
bytes; requests carry it so that client and server agree on the plan.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from splitc.artifacts.plan import Plan
from splitc.runtime.pipeline import PlanError, load_plan
from splitc.wire.request import PLAN_ID

INDEX = "plans.json"
INDEX_SCHEMA = "splitc.plans/1"
DEFAULT_ID = "default"


@dataclass
class PlanEntry:
    """One plan: its id, directory, manifest, CRC and bandwidth interval ``[lo, hi)`` in bytes/s."""

    id: str
    dir: Path
    plan: Plan
    crc: int
    interval: tuple[float, float]

    @property
    def has_cloud(self) -> bool:
        return self.plan.cloud is not None


class PlanSet:
    """All plans of an output directory, ordered by bandwidth (lowest first)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        index_path = self.out_dir / INDEX
        self.index = _read_index(index_path) if index_path.is_file() else None
        self.entries: list[PlanEntry] = self._load_entries()
        self.by_id = {e.id: e for e in self.entries}

    @property
    def adaptive(self) -> bool:
        return self.index is not None

    @property
    def breakpoints(self) -> list[float]:
        """Bandwidths (bytes/s) where the best plan changes, ascending."""
        return [e.interval[0] for e in self.entries[1:]]

    def get(self, plan_id: str) -> PlanEntry:
        """The plan with this id; ``KeyError`` when there is none."""
        return self.by_id[plan_id]

    def for_bandwidth(self, bandwidth: float) -> PlanEntry:
        """The plan whose interval holds ``bandwidth`` (clamped to the compiled range)."""
        for entry in self.entries:
            if bandwidth < entry.interval[1]:
                return entry
        return self.entries[-1]

    def _load_entries(self) -> list[PlanEntry]:
        if self.index is None:
            return [_entry(DEFAULT_ID, self.out_dir, (0.0, float("inf")))]
        entries = []
        for item in self.index["plans"]:
            plan_id = str(item.get("id", ""))
            if not PLAN_ID.match(plan_id):
                raise PlanError(f"{self.out_dir / INDEX}: bad plan id {plan_id!r}")
            lo, hi = (float(v) for v in item["interval_Bps"])
            entries.append(_entry(plan_id, self.out_dir / "plans" / plan_id, (lo, hi)))
        if not entries:
            raise PlanError(f"{self.out_dir / INDEX}: the index lists no plans")
        return sorted(entries, key=lambda e: e.interval[0])


def _entry(plan_id: str, directory: Path, interval: tuple[float, float]) -> PlanEntry:
    plan = load_plan(directory)
    crc = zlib.crc32((directory / "plan.json").read_bytes())
    return PlanEntry(plan_id, directory, plan, crc, interval)


def _read_index(path: Path) -> dict:
    try:
        index = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable plans index: {exc}") from exc
    if not isinstance(index, dict) or not str(index.get("schema", "")).startswith("splitc.plans/"):
        raise PlanError(f"{path}: not a splitc plans index")
    if not isinstance(index.get("plans"), list):
        raise PlanError(f"{path}: 'plans' must be a list")
    return index
