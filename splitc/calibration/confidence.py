"""Certified (one-sided, upper) confidence bounds on the accuracy drop of a split.

Calibration measures, on ``n`` samples, how a quantized cut changes the
model's outputs. The bound the compile checks against ``--max-drop`` is an
upper confidence bound at ``--confidence`` (default 0.95, ``alpha = 1 - conf``):
with probability at least ``1 - alpha`` over the draw of the calibration set,
the true drop on the distribution it came from is at most the bound. The
derivations are in ``docs/accuracy-bound.md``; in short:

* **Agreement** (top-1 without labels): each sample flips (the split's class
  differs from the float model's) with probability ``p``; ``k`` flips of ``n``
  are Binomial(n, p). The bound is the exact Clopper–Pearson upper limit,
  ``Beta.ppf(1 - alpha, k + 1, n - k)`` (1 when ``k = n``). With ``k = 0`` it is
  ``1 - alpha**(1/n)`` (about ``3/n``), never 0.
* **Labelled top-1**: per sample the pair (float right?, split right?) has
  discordant cells ``b`` (float right, split wrong, probability ``p_b``) and
  ``c`` (float wrong, split right, ``p_c``). The drop is ``p_b - p_c``.
  Marginally ``b ~ Binomial(n, p_b)`` and ``c ~ Binomial(n, p_c)``, so with
  the Clopper–Pearson upper limit ``U_b`` at level ``alpha_b`` and lower
  limit ``L_c`` at ``alpha_c`` (``alpha_b + alpha_c = alpha``), the union
  bound gives ``P(p_b - p_c > U_b - L_c) <= alpha`` for every ``(p_b, p_c)``:
  the bound is ``U_b - L_c``. splitc spends 90% of ``alpha`` on ``b``, so that
  a set without discordant pairs certifies nearly as much as the agreement
  bound (``c = 0`` gives ``L_c = 0``) while discordant pairs in the split's
  favour still count.
* **rel-l2**: the mean relative L2 error has no a-priori range, so no exact
  distribution-free bound exists; splitc uses the one-sided Student-t upper
  limit ``mean + t(1 - alpha, n - 1) * sd / sqrt(n)``, which is asymptotically
  exact (central limit theorem) and documented as such.

Raw float32 cuts of a float32 prefix and edge-only are exact: their bound is 0
without any measurement.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

DEFAULT_CONFIDENCE = 0.95
LABELLED_SHARE = 0.9  # the part of alpha spent on the upper limit of p_b (the rest on the lower limit of p_c)

_confidence: ContextVar[float] = ContextVar("splitc_confidence", default=DEFAULT_CONFIDENCE)


def check(confidence: float) -> float:
    from splitc.errors import SplitcError

    if not 0.5 <= float(confidence) < 1:
        raise SplitcError(f"confidence must be at least 50% and below 100%, not {confidence:.4g}")
    return float(confidence)


def current() -> float:
    """The confidence level calibration certifies at (``using`` sets it)."""
    return _confidence.get()


@contextmanager
def using(confidence: float | None):
    """Certify bounds at ``confidence`` inside the block (None: keep the current level)."""
    if confidence is None:
        yield current()
        return
    token = _confidence.set(check(confidence))
    try:
        yield confidence
    finally:
        _confidence.reset(token)


def cp_upper(k: int, n: int, alpha: float) -> float:
    """Clopper–Pearson one-sided upper limit for a binomial proportion: ``P(p > U) <= alpha``."""
    if n <= 0 or k >= n:
        return 1.0
    if k <= 0:
        return 1.0 - alpha ** (1.0 / n)  # the closed form of Beta.ppf(1 - alpha, 1, n)
    from scipy.stats import beta

    return float(beta.ppf(1.0 - alpha, k + 1, n - k))


def cp_lower(k: int, n: int, alpha: float) -> float:
    """Clopper–Pearson one-sided lower limit: ``P(p < L) <= alpha``."""
    if n <= 0 or k <= 0:
        return 0.0
    if k >= n:
        return alpha ** (1.0 / n)
    from scipy.stats import beta

    return float(beta.ppf(alpha, k, n - k + 1))


def agreement_bound(flips: int, n: int, confidence: float) -> float:
    """Upper bound on the flip rate (top-1 agreement with the float model)."""
    return cp_upper(flips, n, 1.0 - confidence)


def paired_bound(worse: int, better: int, n: int, confidence: float) -> float:
    """Upper bound on ``p_b - p_c`` from the discordant pairs: ``worse`` = b, ``better`` = c."""
    alpha = 1.0 - confidence
    return cp_upper(worse, n, LABELLED_SHARE * alpha) - cp_lower(better, n, (1.0 - LABELLED_SHARE) * alpha)


def mean_bound(errors: np.ndarray, confidence: float) -> float:
    """One-sided Student-t upper limit on the mean of ``errors`` (rel-l2; approximate, see the module doc)."""
    errors = np.asarray(errors, dtype=np.float64)
    n = len(errors)
    mean = float(errors.mean()) if n else 0.0
    if n < 2:
        return math.inf if n == 0 or mean > 0 else 0.0
    from scipy.stats import t

    return mean + float(t.ppf(confidence, n - 1)) * float(errors.std(ddof=1)) / math.sqrt(n)


def drop_bound(metric: str, float_quality: np.ndarray, quality: np.ndarray, labelled: bool,
               confidence: float | None = None) -> tuple[float, float]:
    """The measured drop and its certified upper bound, from per-sample qualities (see ``calibrate.per_sample``)."""
    confidence = current() if confidence is None else confidence
    diff = np.asarray(float_quality, np.float64) - np.asarray(quality, np.float64)
    n = len(diff)
    drop = float(diff.mean()) if n else 0.0
    if metric == "top1":
        worse, better = int(np.sum(diff > 0.5)), int(np.sum(diff < -0.5))
        if labelled:
            return drop, paired_bound(worse, better, n, confidence)
        return drop, agreement_bound(worse, n, confidence)
    return drop, mean_bound(diff, confidence)


def smallest_bound(metric: str, n: int, labelled: bool, confidence: float | None = None) -> float | None:
    """The bound a set of ``n`` samples gives when nothing changes (None for rel-l2, which can reach 0)."""
    confidence = current() if confidence is None else confidence
    if metric != "top1":
        return None
    alpha = 1.0 - confidence
    return cp_upper(0, n, LABELLED_SHARE * alpha if labelled else alpha)


def samples_needed(metric: str, max_drop: float, labelled: bool, confidence: float | None = None) -> int | None:
    """The smallest calibration set whose zero-flip bound is within ``max_drop`` (None: no such limit)."""
    confidence = current() if confidence is None else confidence
    if metric != "top1":
        return None
    if max_drop <= 0:
        return None  # nothing measured certifies a zero drop
    if max_drop >= 1:
        return 1
    alpha = (1.0 - confidence) * (LABELLED_SHARE if labelled else 1.0)
    n = math.ceil(math.log(alpha) / math.log1p(-max_drop))
    while n > 1 and 1.0 - alpha ** (1.0 / (n - 1)) <= max_drop:
        n -= 1
    while 1.0 - alpha ** (1.0 / n) > max_drop:
        n += 1
    return n
