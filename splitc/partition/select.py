"""Joint choice of the cut and its bit width (JALAD's formulation), solved exactly.

Choose one candidate cut i and one bit width c minimising

    T_edge(i) + RTT + (S_i(c) + returned bytes) / bandwidth + T_cloud(i)

subject to U_i(c) <= max_drop, where S_i(c) is the mean compressed size of
the cut, A_i(c) the accuracy drop measured on calibration data and U_i(c) =
A_i(c) + M_i(c) its certified one-sided upper confidence bound
(``splitc.calibration.confidence``: Clopper–Pearson for agreement, a paired bound
on the discordant pairs for labelled top-1, a one-sided t bound for rel-l2, at
``--confidence``, 95% by default). JALAD bounds the measured drop alone, which
a small calibration set over-fits; zero flips on n samples still leave a bound
of about 3/n. An option carries the margin M_i(c) (``drop_se``, the name it
had when it held a standard error). Edge-only (nothing sent, no drop) and raw
float32 cuts of a float32 edge are exact: their bound is 0. The problem is small (candidates
x bit widths), so it is solved exactly by enumeration; ``solve_ilp`` states the
same problem for pulp's CBC, which the tests use as an oracle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from splitc.widths import jpeg_width


@dataclass
class Option:
    """One (cut, bits) pair with its measured size and drop and its predicted times."""

    cut: tuple[str, ...]
    bits: int
    edge_ms: float
    cloud_ms: float
    sent_bytes: float  # S_i(c), headers included
    returned_bytes: float
    drop: float  # A_i(c), measured
    kind: str = "split"
    drop_se: float = 0.0  # the certified margin: drop + drop_se is the upper confidence bound U_i(c)
    extra: dict = field(default_factory=dict)
    jpeg_quality: int = 0  # > 0: the 8-bit symbols are JPEG-coded at this quality (lossy)

    @property
    def bound(self) -> float:
        """The certified upper bound on the drop."""
        return self.drop + self.drop_se

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


def bounded_drop(option: Option) -> float:
    """The drop the bound is checked against: the certified upper bound (measured drop + margin)."""
    return option.drop + option.drop_se


def within_bound(drop: float, margin: float, max_drop: float) -> bool:
    """The accuracy bound: the certified bound ``drop + margin`` is at most ``max_drop``."""
    return drop + margin <= max_drop + 1e-12


def feasible(options: list[Option], max_drop: float) -> list[Option]:
    return [o for o in options if within_bound(o.drop, o.drop_se, max_drop)]


def rank(options: list[Option], bandwidth: float, rtt_ms: float, max_drop: float) -> list[Option]:
    """Feasible options, best first (ties: fewer bytes, then fewer bits)."""
    ok = feasible(options, max_drop)
    return sorted(ok, key=lambda o: (o.total_ms(bandwidth, rtt_ms), o.sent_bytes, o.bits))


def select(options: list[Option], bandwidth: float, rtt_ms: float, max_drop: float) -> Option:
    """The exact optimum by enumeration."""
    ranked = rank(options, bandwidth, rtt_ms, max_drop)
    if not ranked:
        raise NoFeasibleOption(f"no cut meets the accuracy bound {max_drop:.4%}")
    return ranked[0]


def solve_ilp(options: list[Option], bandwidth: float, rtt_ms: float, max_drop: float) -> Option:
    """The same problem as a 0-1 ILP (one binary per option), solved by pulp's bundled CBC."""
    import pulp

    model = pulp.LpProblem("cut_and_bits", pulp.LpMinimize)
    pick = [pulp.LpVariable(f"x{i}", cat="Binary") for i in range(len(options))]
    model += pulp.lpSum(x * o.total_ms(bandwidth, rtt_ms) for x, o in zip(pick, options))
    model += pulp.lpSum(pick) == 1
    model += pulp.lpSum(x * bounded_drop(o) for x, o in zip(pick, options)) <= max_drop + 1e-12
    status = model.solve(pulp.PULP_CBC_CMD(msg=False))
    if pulp.LpStatus[status] != "Optimal":
        raise NoFeasibleOption(f"the ILP is {pulp.LpStatus[status]}")
    return options[max(range(len(options)), key=lambda i: pick[i].value() or 0.0)]


def option_summary(option: Option, bandwidth: float, rtt_ms: float) -> dict:
    """An option as the plan's ``selection`` lists it, priced at one link."""
    return {
        "kind": option.kind if option.cut else "edge-only",
        "cut": list(option.cut),
        "bits": option.bits,
        **({"jpeg_quality": option.jpeg_quality} if option.jpeg_quality else {}),
        "bytes": option.sent_bytes,
        "drop": option.drop,
        "drop_se": option.drop_se,
        "edge_ms": option.edge_ms,
        "transfer_ms": option.transfer_ms(bandwidth, rtt_ms),
        "cloud_ms": option.cloud_ms,
        "total_ms": option.total_ms(bandwidth, rtt_ms),
    }
