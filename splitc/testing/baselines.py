"""Whole-graph solvers: the baselines the partitioner is benchmarked against, and test oracles.

* :func:`whole_graph_networkx` is the DADS-style approach: one min-cut over the
  flow network of the whole graph, solved by ``networkx.minimum_cut`` (float
  capacities, scaled exactly to whole numbers; see :func:`network_to_networkx`).
* :func:`whole_graph_scipy` solves the same whole-graph network with SciPy's
  max-flow (through :func:`splitc.partition.mincut.source_side`), without the cut
  vertex decomposition.
* :func:`brute_force` enumerates every assignment of a small problem.

A min-cut prices every assignment without the round trip. The round trip is
paid once whenever anything crosses the network, so the optimum is the cheaper
of edge-only (no crossing; in a dead-code-free graph the only assignment that
crosses nothing) and the min-cut assignment priced with the round trip. Both
whole-graph solvers return that choice, preferring edge-only on ties as
:func:`splitc.partition.solve.partition` does.
"""

from __future__ import annotations

import math
from fractions import Fraction

import networkx as nx
import numpy as np

from splitc.partition.network import Network, build_network, source_side
from splitc.partition.problem import SplitProblem, is_valid
from splitc.partition.pricing import evaluate

__all__ = ["whole_graph_networkx", "whole_graph_scipy", "brute_force", "network_to_networkx", "random_dag_problem"]

_NO_CUTS = np.array([], dtype=np.int64)


def network_to_networkx(net: Network, exact: bool = True) -> nx.DiGraph:
    """The flow network as an ``nx.DiGraph``.

    Parallel edges are merged: finite capacities are summed (in float ms),
    and an infinite edge absorbs any finite edge parallel to it. Infinite
    edges carry no ``capacity`` attribute, which networkx reads as infinite.

    With ``exact`` (the default) every float capacity is multiplied by the
    same power of two 2**K (``graph.graph["scale"]``), chosen so that all of
    them become whole numbers without any rounding, and stored as a Python
    int: networkx then computes the min-cut of the float network exactly. With
    plain float capacities the max-flow *value* is right, but
    ``nx.minimum_cut`` decides which edges are saturated by ``flow ==
    capacity``, and float round-off (a residual of 1e-13) can put a large part
    of the graph on the wrong side, returning a cut far from minimal (seen on
    random 200-500 node problems). ``exact=False`` gives the float graph.
    """
    key = net.src * net.num_vertices + net.dst
    unique, inverse = np.unique(key, return_inverse=True)
    finite = np.bincount(inverse, weights=np.where(net.inf, 0.0, net.cap), minlength=len(unique))
    infinite = np.bincount(inverse, weights=net.inf.astype(np.float64), minlength=len(unique)) > 0
    rows, cols = np.divmod(unique, net.num_vertices)
    caps = [float(c) for c in finite[~infinite]]
    scale_exp = 0
    if exact:
        # c = M * 2**(e - 53) with an integer M, so c * 2**(53 - e) is whole.
        scale_exp = max([0] + [53 - math.frexp(c)[1] for c in caps if c > 0])
        caps = [_scaled(c, scale_exp) for c in caps]
    graph = nx.DiGraph(scale=2**scale_exp)
    graph.add_nodes_from(range(net.num_vertices))
    graph.add_edges_from(
        (int(u), int(v), {"capacity": c}) for u, v, c in zip(rows[~infinite], cols[~infinite], caps)
    )
    graph.add_edges_from((int(u), int(v)) for u, v in zip(rows[infinite], cols[infinite]))
    return graph


def _scaled(c: float, exp: int) -> int:
    """``c * 2**exp`` as an exact int (``c * 2**exp`` must be whole)."""
    try:
        return int(math.ldexp(c, exp))  # exact: only the exponent changes
    except OverflowError:
        return int(Fraction(c) * 2**exp)


def _cheaper_than_edge_only(problem: SplitProblem, on_cloud: np.ndarray) -> np.ndarray:
    """The min-cut assignment priced with the round trip, or edge-only if that is no dearer."""
    edge_only = np.zeros(problem.num_nodes, dtype=bool)
    if evaluate(problem, edge_only).total_ms <= evaluate(problem, on_cloud).total_ms:
        return edge_only
    return on_cloud


def whole_graph_networkx(problem: SplitProblem) -> np.ndarray:
    """Optimal ``on_cloud`` from one networkx min-cut over the whole graph (DADS-style).

    The network is :func:`splitc.partition.network.build_network` without cut
    vertices, converted by :func:`network_to_networkx` (float capacities made
    whole by an exact power-of-two scale); ``nx.minimum_cut`` (preflow-push)
    from the source (0, the edge) to the sink (1, the cloud) gives the nodes
    that stay on the edge. The round trip is accounted for afterwards by
    comparing with edge-only.
    """
    n = problem.num_nodes
    if n == 0:
        return np.zeros(0, dtype=bool)
    graph = network_to_networkx(build_network(problem, _NO_CUTS))
    _, (reachable, _) = nx.minimum_cut(graph, 0, 1)
    side = np.zeros(graph.number_of_nodes(), dtype=bool)
    side[list(reachable)] = True
    return _cheaper_than_edge_only(problem, ~side[2 : 2 + n])


def whole_graph_scipy(problem: SplitProblem) -> np.ndarray:
    """Optimal ``on_cloud`` from one SciPy max-flow over the whole graph (no cut vertices).

    Same network and round-trip handling as :func:`whole_graph_networkx`; the
    capacities go through :func:`splitc.partition.mincut.source_side`, which
    scales them to integers.
    """
    n = problem.num_nodes
    if n == 0:
        return np.zeros(0, dtype=bool)
    side = source_side(build_network(problem, _NO_CUTS))
    return _cheaper_than_edge_only(problem, ~side[2 : 2 + n])


def brute_force(problem: SplitProblem, chunk: int = 1 << 15) -> tuple[float, np.ndarray]:
    """The exact optimum by enumerating all ``2**n`` assignments (``n <= 20``).

    Assignments are the bits of 0 .. 2**n - 1 (bit i set: node i on the
    cloud), priced in chunks with the same rules as
    :func:`splitc.partition.pricing.evaluate`: a value goes up once if any cloud
    node reads it and its producer is on the edge (graph inputs are produced
    on the edge), a graph output comes down if its producer is on the cloud,
    and the round trip is paid when anything crosses. Invalid assignments (a
    cloud node feeding an edge node) are skipped. Returns ``(best total ms,
    on_cloud)``; ties go to the smallest bit pattern, so edge-only wins a tie.
    """
    n, m = problem.num_nodes, problem.num_values
    if n > 20:
        raise ValueError(f"brute force over {n} nodes is too many (at most 20)")
    value_of = problem.value_of_consumer_edge()
    has_prod = problem.producer >= 0
    dep = has_prod[value_of]
    dep_prod, dep_cons = problem.producer[value_of[dep]], problem.cons_idx[dep]
    consumers = [problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]] for v in range(m)]
    nbytes = problem.nbytes.astype(np.float64)
    shifts = np.arange(n, dtype=np.int64)

    best_total, best_mask = np.inf, -1
    for start in range(0, 1 << n, chunk):
        masks = np.arange(start, min(start + chunk, 1 << n), dtype=np.int64)
        cloud = ((masks[:, None] >> shifts) & 1).astype(bool)  # (a, n)
        valid = ~np.any(cloud[:, dep_prod] & ~cloud[:, dep_cons], axis=1)
        if not valid.any():
            continue
        cloud, masks = cloud[valid], masks[valid]
        cloud_use = np.zeros((len(masks), m), dtype=bool)
        prod_cloud = np.zeros((len(masks), m), dtype=bool)
        for v in range(m):
            if len(consumers[v]):
                cloud_use[:, v] = cloud[:, consumers[v]].any(axis=1)
            if has_prod[v]:
                prod_cloud[:, v] = cloud[:, problem.producer[v]]
        up = cloud_use & ~prod_cloud
        down = problem.is_output[None, :] & prod_cloud
        crossing = up.any(axis=1) | down.any(axis=1)
        transfer = np.where(crossing, problem.rtt_ms, 0.0) + ((up | down) @ nbytes) / problem.bandwidth * 1e3
        edge = np.where(cloud, 0.0, problem.edge_ms).sum(axis=1)
        total = edge + transfer + np.where(cloud, problem.cloud_ms, 0.0).sum(axis=1)
        i = int(np.argmin(total))
        if total[i] < best_total:
            best_total, best_mask = float(total[i]), int(masks[i])
    on_cloud = ((best_mask >> shifts) & 1).astype(bool)
    assert is_valid(problem, on_cloud)
    return best_total, on_cloud


# Over 60 lines on purpose: one generator whose knobs (fan-out, outputs, pinned tensors, cost spread)
# must stay together so that a seed gives the same problem.
def random_dag_problem(
    rng: np.random.Generator,
    num_nodes: int,
    *,
    rtt_ms: float = 0.0,
    bandwidth: float = 1000.0,
    float_costs: bool = False,
    allow_dead: bool = False,
) -> SplitProblem:
    """A random partition problem for tests and benchmarks, nodes in topological order.

    One to three graph inputs; each node reads zero (sometimes) to three
    tensors, mostly recent ones and preferably ones nobody reads yet, and makes
    one or two; a tensor may have several readers; the last node's tensors and
    a few earlier ones (rarely a graph input) are graph outputs. Integer costs
    and sizes unless ``float_costs``; with the default bandwidth of 1000 B/s a
    byte costs one millisecond. Unless ``allow_dead``, nodes that reach no
    graph output are removed (as dead-code elimination would), so the result
    may have fewer than ``num_nodes`` nodes. Unread, non-output tensors are
    left out, as :func:`splitc.partition.problem.problem_from_graph` does.
    """
    num_inputs = int(rng.choice([1, 1, 1, 2, 3]))
    producer = [-1] * num_inputs
    readers: list[set[int]] = [set() for _ in range(num_inputs)]
    for i in range(num_nodes):
        k = 0 if rng.random() < 0.08 else int(rng.choice([1, 1, 1, 2, 2, 3]))
        open_ = [v for v in range(len(producer)) if not readers[v]]
        for _ in range(k):
            if open_ and rng.random() < 0.6:
                v = open_[int(rng.integers(len(open_)))]
            else:  # mostly recent tensors, sometimes any
                lo = 0 if rng.random() < 0.3 else max(0, len(producer) - 4)
                v = int(rng.integers(lo, len(producer)))
            readers[v].add(i)
        for _ in range(2 if rng.random() < 0.2 else 1):
            producer.append(i)
            readers.append(set())
    m = len(producer)
    producer_arr = np.array(producer, dtype=np.int64)
    is_output = np.zeros(m, dtype=bool)
    if num_nodes:
        is_output[producer_arr == num_nodes - 1] = True
    is_output |= (rng.random(m) < 0.08) & (producer_arr >= 0)
    is_output |= (rng.random(m) < 0.03) & (producer_arr < 0)

    alive = np.ones(num_nodes, dtype=bool)
    if not allow_dead:  # dead-code elimination, last node first
        alive[:] = False
        for i in reversed(range(num_nodes)):
            outs = np.flatnonzero(producer_arr == i)
            alive[i] = any(is_output[v] or any(alive[c] for c in readers[v]) for v in outs)
    keep_node = np.flatnonzero(alive)
    new_index = -np.ones(num_nodes, dtype=np.int64)
    new_index[keep_node] = np.arange(len(keep_node))
    values = [
        v for v in range(m)
        if (producer[v] < 0 or alive[producer[v]]) and (is_output[v] or any(alive[c] for c in readers[v]))
    ]
    consumers = [sorted(int(new_index[c]) for c in readers[v] if alive[c]) for v in values]
    ptr = np.zeros(len(values) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(c) for c in consumers])
    n = len(keep_node)
    if float_costs:
        edge_ms, cloud_ms = rng.uniform(0, 20, n), rng.uniform(0, 10, n)
        nbytes = rng.integers(0, 30_000, len(values))
    else:
        max_bytes = int(rng.choice([4, 10, 30]))  # cheap to expensive links
        edge_ms, cloud_ms = rng.integers(0, 21, n).astype(float), rng.integers(0, 11, n).astype(float)
        nbytes = rng.integers(0, max_bytes + 1, len(values))
    return SplitProblem(
        edge_ms=edge_ms,
        cloud_ms=cloud_ms,
        producer=np.array([new_index[producer[v]] if producer[v] >= 0 else -1 for v in values], dtype=np.int64),
        nbytes=nbytes.astype(np.int64),
        is_output=is_output[values],
        cons_ptr=ptr,
        cons_idx=np.array([c for cs in consumers for c in cs], dtype=np.int64),
        bandwidth=float(bandwidth),
        rtt_ms=float(rtt_ms),
        node_names=[f"n{i}" for i in range(n)],
        value_names=[f"v{i}" for i in range(len(values))],
    )
