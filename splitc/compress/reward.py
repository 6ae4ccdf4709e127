"""The reward of the context-aware model tree's search (its eq. 7), for comparing search strategies.

``R = N1(A) + N2(T)``, with ``A`` the accuracy and ``T`` the latency, each normalised to [0, 1] over its
range: ``N1(x) = (x - min) / (max - min)`` (higher accuracy is better) and ``N2(x) = (max - x) / (max -
min)`` (lower latency is better). The ranges are the ones the model-tree evaluation sets: accuracy from
50% to 100%, latency from 0 to 500 ms. Values outside a range are not clipped (the normalisation is
linear), so a latency above 500 ms gives a negative ``N2``. ``weights`` scales the two terms (the
evaluation there weighs them 100 and 300; eq. 7 itself has none).
"""

from __future__ import annotations

ACCURACY_RANGE = (0.5, 1.0)
LATENCY_RANGE_MS = (0.0, 500.0)


def n1(x: float, low: float, high: float) -> float:
    """``(x - min) / (max - min)``: the normalised accuracy."""
    return (x - low) / (high - low)


def n2(x: float, low: float, high: float) -> float:
    """``(max - x) / (max - min)``: the normalised latency (1 at ``min``, 0 at ``max``)."""
    return (high - x) / (high - low)


def reward(accuracy: float, latency_ms: float, accuracy_range: tuple[float, float] = ACCURACY_RANGE,
           latency_range: tuple[float, float] = LATENCY_RANGE_MS, weights: tuple[float, float] = (1.0, 1.0)) -> float:
    """``R = w1 * N1(A) + w2 * N2(T)`` (eq. 7 with ``weights`` (1, 1))."""
    return weights[0] * n1(accuracy, *accuracy_range) + weights[1] * n2(latency_ms, *latency_range)
