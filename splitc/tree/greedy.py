"""Greedy forward selection: add the item that lowers a value most, while it lowers it."""

from __future__ import annotations

from typing import Callable, Hashable, Iterable, TypeVar

T = TypeVar("T", bound=Hashable)


def add_greedily(chosen: list[T], pool: Iterable[T], value: Callable[[list[T]], float], limit: int,
                 before_round: Callable[[list[T]], None] | None = None) -> tuple[list[T], float]:
    """Grow ``chosen`` (in place) from ``pool`` up to ``limit`` items, each time by the item whose addition
    gives the lowest ``value``, and stop when no addition lowers it; returns (chosen, its value).

    Used for the tree's forks and its class edges, both scored by the exactly solved policy.
    """
    pool = list(pool)
    current = value(chosen)
    while len(chosen) < limit:
        if before_round is not None:
            before_round(chosen)
        trials = [(value(chosen + [item]), item) for item in pool if item not in chosen]
        if not trials:
            break
        best_value, best = min(trials)
        if not best_value < current - 1e-9:
            break
        chosen.append(best)
        current = best_value
    return chosen, current
