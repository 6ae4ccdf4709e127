"""Replay of tree policies over a trace's actual delivery opportunities, and the oracle lower bound.

Each request starts at a time on the (repeating) trace. At each fork the
edge measures the rate of the last step (the policy's ``step_s``): the bytes
of the opportunities in ``(t - step, t]`` over the step, which the policy's
class edges turn into a class. Running a block advances the clock by its edge
time; an offload sends its bytes over the trace's next opportunities
(:meth:`Trace.delivery_ms`, one 1500-byte packet each, the link otherwise
idle), then pays the round trip and the cloud's time. Transfer times come
from the trace itself, never from the class representatives, so the replay
measures how well the Markov model served the decisions.

Start times are read in the trace's repeating regime: a request at ``s``
seconds is placed a whole number of periods later, where the cycle's time 0
also holds the previous cycle's last opportunities (the trace's very first
millisecond has none), so ``s`` and ``s + period`` give the same latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from splitc.errors import SplitcError
from splitc.tree.markov import last_step_rate
from splitc.tree.policy import TreePolicy
from splitc.tree.spec import Leaf, TreeSpec, leaves
from splitc.tree.traces import Trace

__all__ = ["leaf_latencies", "measured_rate", "oracle", "simulate"]


def _offset_ms(trace: Trace, step_s: float) -> float:
    """A whole number of periods, at least one and at least one step: the repeating regime, windows at t >= 0."""
    return trace.period_ms * max(1, math.ceil(step_s * 1e3 / trace.period_ms))


def measured_rate(trace: Trace, t_ms, step_s: float) -> np.ndarray:
    """Rate (bytes/s) of the opportunities in ``(t - step, t]`` (``t_ms`` >= step)."""
    return last_step_rate(trace, t_ms, step_s)


def _starts(start_times_s: Sequence[float]) -> np.ndarray:
    starts = np.asarray(start_times_s, dtype=float)
    if starts.ndim != 1 or np.any(starts < 0) or not np.all(np.isfinite(starts)):
        raise SplitcError("request start times must be a list of finite seconds >= 0")
    return starts


def simulate(policy: TreePolicy, spec: TreeSpec, trace: Trace, start_times_s: Sequence[float]) -> np.ndarray:
    """Latency (ms) of one request per start time (s on the trace) when ``policy`` decides at each fork."""
    starts = _starts(start_times_s)
    offset = _offset_ms(trace, policy.step_s)
    out = np.empty(len(starts))
    for i, start in enumerate(starts):
        t0 = t = start * 1e3 + offset
        fork, path = 0, ()
        while fork < spec.num_blocks:
            cls = int(policy.classify(measured_rate(trace, t, policy.step_s)))
            action = policy.action(fork, path, cls)
            if action.kind == "offload":
                option = spec.options(fork, path)[action.index]
                t = float(trace.delivery_ms(t, option.nbytes)) + spec.rtt_ms + spec.cloud_ms(fork, path)
                break
            t += spec.blocks[fork].variants[action.index].edge_ms
            fork, path = fork + 1, path + (action.index,)
        out[i] = t - t0
    return out


def leaf_latencies(spec: TreeSpec, leaf: Leaf, trace: Trace, start_times_s: Sequence[float]) -> np.ndarray:
    """Latency (ms) of one composition for requests starting at ``start_times_s`` on the trace."""
    starts = _starts(start_times_s) * 1e3 + trace.period_ms
    edge = spec.edge_ms(leaf.path)
    if leaf.option is None:
        return np.full(len(starts), edge)
    option = spec.options(leaf.fork, leaf.path)[leaf.option]
    sent = starts + edge
    return trace.delivery_ms(sent, option.nbytes) + spec.rtt_ms + spec.cloud_ms(leaf.fork, leaf.path) - starts


def oracle(spec: TreeSpec, trace: Trace, start_times_s: Sequence[float], max_drop: float = math.inf) -> np.ndarray:
    """Per request, the least latency of any composition meeting ``max_drop``, knowing the trace ahead.

    No policy that decides from measurements can do better on the same
    requests: it always ends up playing one of these compositions.
    """
    best = np.full(len(_starts(start_times_s)), math.inf)
    for leaf in leaves(spec, max_drop):
        best = np.minimum(best, leaf_latencies(spec, leaf, trace, start_times_s))
    if np.isinf(best).any():
        raise SplitcError(f"no composition of the model tree has an accuracy-drop bound <= {max_drop}")
    return best
