"""Joint choice of the cut and its bit width (JALAD's formulation), solved exactly.

Choose one candidate cut i and one bit width c minimising

    T_edge(i) + RTT + (S_i(c) + returned bytes) / bandwidth + T_cloud(i)

subject to A_i(c) + z * SE_i(c) <= max_drop, where S_i(c) is the mean
compressed size of the cut and A_i(c) the accuracy drop, both measured on
calibration data, and SE_i(c) the standard error of that drop (from the paired
per-sample differences). JALAD bounds the measured drop alone, which a small
calibration set over-fits; the margin (z = 1.645 by default: the bound holds
with 95% one-sided confidence) keeps the bound on unseen data. Edge-only
(nothing sent, no drop) is always a candidate. The problem is small (candidates
x bit widths), so it is solved exactly by enumeration; ``solve_ilp`` states the
same problem for pulp's CBC, which the tests use as an oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from splitc.passes.qdq import jpeg_width


@dataclass
class Option:
    """One (cut, bits) pair with its measured size and drop and its predicted times."""

    cut: tuple[str, ...]
    bits: int
    edge_ms: float
    cloud_ms: float
    sent_bytes: float  # S_i(c), headers included
    returned_bytes: float
    drop: float  # A_i(c)
    kind: str = "split"
    drop_se: float = 0.0  # standard error of A_i(c)
    extra: dict = field(default_factory=dict)
    jpeg_quality: int = 0  # > 0: the 8-bit symbols are JPEG-coded at this quality (lossy)

    @property
    def width(self) -> int | str:
        """The calibration width: ``bits``, or ``"jpeg<quality>"``."""
        return jpeg_width(self.jpeg_quality) if self.jpeg_quality else self.bits

    def transfer_ms(self, bandwidth: float, rtt_ms: float) -> float:
        if not self.cut and not self.returned_bytes:
            return 0.0
        return rtt_ms + (self.sent_bytes + self.returned_bytes) / bandwidth * 1e3

    def total_ms(self, bandwidth: float, rtt_ms: float) -> float:
        return self.edge_ms + self.transfer_ms(bandwidth, rtt_ms) + self.cloud_ms


class NoFeasibleOption(ValueError):
    """No option meets the accuracy bound (edge-only always does, so this means none was given)."""


CONFIDENCE_Z = 1.645


def bounded_drop(option: Option, z: float = CONFIDENCE_Z) -> float:
    """The drop the bound is checked against: the measured drop plus z standard errors."""
    return option.drop + z * option.drop_se


def within_bound(drop: float, drop_se: float, max_drop: float, z: float = CONFIDENCE_Z) -> bool:
    """The accuracy bound: ``drop + z * drop_se <= max_drop``."""
    return drop + z * drop_se <= max_drop + 1e-12


def feasible(options: list[Option], max_drop: float, z: float = CONFIDENCE_Z) -> list[Option]:
    return [o for o in options if within_bound(o.drop, o.drop_se, max_drop, z)]


def rank(options: list[Option], bandwidth: float, rtt_ms: float, max_drop: float,
         z: float = CONFIDENCE_Z) -> list[Option]:
    """Feasible options, best first (ties: fewer bytes, then fewer bits)."""
    ok = feasible(options, max_drop, z)
    return sorted(ok, key=lambda o: (o.total_ms(bandwidth, rtt_ms), o.sent_bytes, o.bits))


def select(options: list[Option], bandwidth: float, rtt_ms: float, max_drop: float,
           z: float = CONFIDENCE_Z) -> Option:
    """The exact optimum by enumeration."""
    ranked = rank(options, bandwidth, rtt_ms, max_drop, z)
    if not ranked:
        raise NoFeasibleOption(f"no cut meets the accuracy bound {max_drop:.4%}")
    return ranked[0]


def solve_ilp(options: list[Option], bandwidth: float, rtt_ms: float, max_drop: float,
              z: float = CONFIDENCE_Z) -> Option:
    """The same problem as a 0-1 ILP (one binary per option), solved by pulp's bundled CBC."""
    import pulp

    model = pulp.LpProblem("cut_and_bits", pulp.LpMinimize)
    pick = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(len(options))]
    model += pulp.lpSum(x * o.total_ms(bandwidth, rtt_ms) for x, o in zip(pick, options))
    model += pulp.lpSum(pick) == 1
    model += pulp.lpSum(x * bounded_drop(o, z) for x, o in zip(pick, options)) <= max_drop + 1e-12
    status = model.solve(pulp.PULP_CBC_CMD(msg=False))
    if pulp.LpStatus[status] != "Optimal":
        raise NoFeasibleOption(f"the ILP is {pulp.LpStatus[status]}")
    return options[max(range(len(options)), key=lambda i: pick[i].value() or 0.0)]
