"""Names of the edge rewrites a compile may choose among, and of the edge variants built from them.

``--compress`` takes ``auto`` (every family), ``none`` (the default: no rewrite) or a comma-separated list
of :data:`FAMILIES`. An edge variant (:class:`Spec`) is a sequence of rewrite steps, each a family at a
level, applied to the edge nodes of a cut, plus the arithmetic the edge half runs in. Its name reads
``prune50+bottleneck25`` (channels kept, in percent), ``lowrank75`` (FLOPs kept), ``int8``, ``fp16`` or
``base`` (nothing changed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from splitc.errors import SplitcError

FAMILIES = ("bottleneck", "lowrank", "prune", "int8", "fp16")
REWRITES = ("lowrank", "prune", "bottleneck")  # model rewrites (the others change the edge's arithmetic)
LEVELS = (0.25, 0.5, 0.75)  # low-rank: fraction of each layer's FLOPs kept; prune: fraction of channels kept
BOTTLENECK_FRACTIONS = (0.125, 0.25, 0.5)  # channels kept at the cut, as a fraction of its channels
COMBINED_LEVEL = 0.5  # the level of pruning and of low-rank combined with each bottleneck fraction


def parse_compress(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``auto``, ``none`` or a list (a comma-separated string or names) as a tuple of family names.

    Raises ``SplitcError`` (one line, listing the valid names) for an unknown name.
    """
    if value is None:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    names = [str(item).strip().lower() for item in items if str(item).strip()]
    if names in ([], ["none"]):
        return ()
    if names == ["auto"]:
        return FAMILIES
    bad = [n for n in names if n not in FAMILIES]
    if bad:
        raise SplitcError(f"unknown --compress {bad[0]!r}: use auto, none or a comma-separated list of "
                          f"{', '.join(FAMILIES)}")
    return tuple(dict.fromkeys(names))


def _percent(level: float) -> str:
    return f"{level * 100:g}"


@dataclass(frozen=True)
class Spec:
    """An edge variant: rewrite ``steps`` ((family, level), applied in order) and the edge ``precision``."""

    steps: tuple[tuple[str, float], ...] = ()
    precision: str = "fp32"  # "fp32", "fp16" or "int8"

    @property
    def name(self) -> str:
        """``base``, ``int8``, ``fp16`` or the steps joined by ``+`` (``prune50+bottleneck25``)."""
        parts = [f"{family}{_percent(level)}" for family, level in self.steps]
        if self.precision != "fp32":
            parts.append(self.precision)
        return "+".join(parts) or "base"

    @property
    def families(self) -> tuple[str, ...]:
        """The families this variant uses (empty for ``base``)."""
        return tuple(f for f, _ in self.steps) + ((self.precision,) if self.precision != "fp32" else ())

    @property
    def is_base(self) -> bool:
        """Whether the variant changes nothing."""
        return not self.steps and self.precision == "fp32"

    @property
    def fitted(self) -> bool:
        """Whether the variant is fitted on calibration data (then certified on the other share only)."""
        return bool(self.steps) or self.precision == "int8"


BASE = Spec()


def specs_for(families: Iterable[str], single_tensor: bool, has_edge: bool, has_cloud: bool) -> list[Spec]:
    """Every variant of ``families`` for one cut (``base`` first).

    A cut with no edge node has only ``base``; the bottleneck needs a single-tensor cut read on the cloud;
    it is also combined with pruning and with low-rank at ``COMBINED_LEVEL`` (the rewrite first, then the
    bottleneck on the rewritten cut tensor).
    """
    families = set(families)
    specs = [BASE]
    if not has_edge:
        return specs
    specs += [Spec(precision=p) for p in ("fp16", "int8") if p in families]
    for family in ("lowrank", "prune"):
        if family in families:
            specs += [Spec(((family, level),)) for level in LEVELS]
    if "bottleneck" in families and single_tensor and has_cloud:
        specs += [Spec((("bottleneck", f),)) for f in BOTTLENECK_FRACTIONS]
        for family in ("prune", "lowrank"):
            if family in families:
                specs += [Spec(((family, COMBINED_LEVEL), ("bottleneck", f))) for f in BOTTLENECK_FRACTIONS]
    return specs
