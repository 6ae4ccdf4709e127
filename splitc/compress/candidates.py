"""The (cut, edge variant) candidates of a compressed compile, with a lower bound before they are built.

``base``, ``fp16`` and ``int8`` candidates keep the model, so they are priced at once. A rewrite has to be
fitted before its model can be priced, so its candidate starts with a bound that needs no fit: every node
the rewrite cannot change keeps its time (at the cheaper of its two sides, since a rewritten model may be
split with another assignment), and the rest cost nothing. Which nodes may change is fixed by the rewrite:

* ``lowrank``: the Gemm, MatMul and Conv nodes of the edge;
* ``prune``: Conv, BatchNormalization, PRelu, element-wise activations, pools, Flatten and Gemm nodes
  (a pruned chain and its consumer; any other node reading a pruned tensor makes the rewrite refuse);
* ``bottleneck``: the cloud nodes that read the cut tensor (folded or restored); the edge only gains its
  projection.

``Resolver.resolve`` fits and prices a candidate when the search reaches it; its exact price is never
below this bound, so a search that stops on the bound stays exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitc.compress.names import Spec, specs_for
from splitc.compress.prune import POOLS, UNARY
from splitc.compress.space import Builder, Built, CalibrationShares, Priced, Pricer, cut_text

LINEAR = frozenset({"Gemm", "MatMul", "Conv"})
PRUNED = LINEAR | UNARY | POOLS | {"BatchNormalization", "PRelu", "Flatten"}


@dataclass
class Candidate:
    """One (cut, variant) pair: the cut in the original model, the variant, and once resolved its price."""

    cut: tuple[str, ...]
    spec: Spec
    base_flops: float  # the edge FLOPs of the original model at this cut
    floor_ms: float  # the compute time no rewrite of the variant can remove (exact once priced)
    returned_bytes: float
    priced: Priced | None = None  # None until resolved (rewrites are fitted on demand)
    built: Built | None = None  # None: the analysed model (base, fp16, int8)
    reason: str | None = None  # why the variant does not apply here (set when resolving fails)

    @property
    def key(self) -> tuple:
        """(cut, variant): what identifies the candidate in caches and bounds."""
        return (self.cut, self.spec)

    @property
    def sent(self) -> tuple[str, ...]:
        """The tensors the emitted edge half sends (renamed by a bottleneck)."""
        return self.built.cut if self.built is not None else self.cut

    def lower_bound(self, bandwidth: float, rtt_ms: float) -> float:
        """Predicted ms with nothing sent but the returned outputs: no width can make it faster."""
        p = self.priced
        returned = p.returned_bytes if p is not None else self.returned_bytes
        compute = p.edge_ms + p.cloud_ms if p is not None else self.floor_ms
        transfer = rtt_ms + returned / bandwidth * 1e3 if self.cut or returned else 0.0
        return compute + transfer

    @property
    def flops_saved(self) -> float:
        """Fraction of the edge FLOPs the variant removes (0 for base, fp16 and int8)."""
        return 0.0 if self.base_flops <= 0 else 1.0 - self.priced.edge_flops / self.base_flops


def _floor(spec: Spec, base: Priced, costs: dict, cut: tuple[str, ...], graph) -> float:
    """The compute time of the nodes ``spec`` cannot change (see the module doc)."""
    edge, changed = set(base.part.edge_nodes), set()
    for family, _ in spec.steps:
        if family == "lowrank":
            changed |= {n.name for n in graph.data_nodes if n.op_type in LINEAR and n.name in edge}
        elif family == "prune":
            changed |= {n.name for n in graph.data_nodes if n.op_type in PRUNED}
        else:
            readers = {c.name for t in cut for c in graph.values[t].consumers}
            changed |= readers - edge
    return float(sum(min(e, c) for name, (e, c) in costs.items() if name not in changed))


def _missing(spec: Spec, base: Priced, graph) -> str:
    """Why ``spec`` has nothing to rewrite in the edge of this cut ('' when it may have)."""
    ops = {n.op_type for n in graph.data_nodes if n.name in set(base.part.edge_nodes)}
    for family, _ in spec.steps:
        if family == "lowrank" and not ops & LINEAR:
            return "no Gemm/MatMul/Conv in the edge half"
        if family == "prune" and "Conv" not in ops:
            return "no convolution in the edge half to prune"
    return ""


class Resolver:
    """Fits and prices candidates on demand, noting per family why a candidate did not apply."""

    def __init__(self, analysis, shares: CalibrationShares, reasons: dict[str, list[str]]) -> None:
        self.builder = Builder(analysis.graph.model, shares.fit)
        self.pricer = Pricer(analysis)
        self.small = shares.too_small
        self.reasons = reasons

    def resolve(self, cand: Candidate) -> bool:
        """Price ``cand`` (fitting its rewrites first); False, with ``cand.reason`` set, when it does not apply."""
        if cand.priced is not None or cand.reason is not None:
            return cand.reason is None
        found = self._price(cand)
        if isinstance(found, str):
            cand.reason = found
            for family in cand.spec.families:
                self.reasons.setdefault(family, []).append(f"{cand.spec.name} at {cut_text(cand.cut)}: {found}")
            return False
        cand.priced = found
        return True

    def _price(self, cand: Candidate) -> Priced | str:
        spec, cut = cand.spec, cand.cut
        if self.small is not None and spec.fitted:
            return self.small
        if not spec.steps:
            return self.pricer.price((), self.builder.model, cut, spec.precision)
        scope = frozenset(self.pricer.analysis.partition_for(cut).edge_nodes)
        built = self.builder.build(spec, cut, scope)
        if isinstance(built, str):
            return built
        cand.built = built
        return self.pricer.price(built.key, built.model, built.cut, spec.precision)


def enumerate_candidates(analysis, families, cuts, shares: CalibrationShares,
                         progress=None) -> tuple[list[Candidate], dict[str, list[str]], Resolver]:
    """Every (cut, variant) candidate: those that keep the model priced, rewrites bounded (not yet fitted)."""
    reasons: dict[str, list[str]] = {f: [] for f in families}
    resolver = Resolver(analysis, shares, reasons)
    graph = analysis.graph
    costs = dict(zip(analysis.costs.node_names, zip(np.asarray(analysis.costs.edge_ms, float),
                                                     np.asarray(analysis.costs.cloud_ms, float))))
    candidates: list[Candidate] = []
    for number, cut in enumerate(cuts):
        if progress is not None:
            progress(f"pricing edge variants: cut {number + 1} of {len(cuts)}")
        base = resolver.pricer.price((), graph.model, cut, "fp32")
        if isinstance(base, str):
            continue
        specs = specs_for(families, len(cut) == 1, bool(base.part.edge_nodes), bool(base.part.cloud_nodes))
        for spec in specs:
            missing = _missing(spec, base, graph)
            if missing:
                for family in spec.families:
                    reasons[family].append(f"{spec.name} at {cut_text(cut)}: {missing}")
                continue
            exact = base.edge_ms + base.cloud_ms
            floor = exact if not spec.steps else _floor(spec, base, costs, cut, graph)
            cand = Candidate(cut, spec, base.edge_flops, floor, base.returned_bytes)
            if spec.is_base:
                cand.priced = base
            elif not spec.steps and not resolver.resolve(cand):
                continue
            candidates.append(cand)
    return candidates, reasons, resolver


__all__ = ["Candidate", "Resolver", "enumerate_candidates"]
