"""Paired significance tests for per-query scores (NDCG@10 from `per_query.json`) of a run
against a reference run, with Holm-Bonferroni correction across the comparisons in a table.

Both tests are paired over queries, as is standard in IR evaluation (Smucker, Allan, Carterette,
CIKM 2007): the randomization test flips the sign of each per-query difference at random, which
needs no normality assumption; the paired t-test is reported alongside because reviewers expect it.
Inputs may be equal-length sequences (already aligned) or {qid: score} dicts, which are aligned
on the intersection of their query ids.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

Scores = Mapping[str, float] | Sequence[float] | np.ndarray


def paired(a: Scores, b: Scores) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned float arrays. Dicts are matched on shared query ids (sorted, so the order and
    hence a seeded test's result do not depend on dict order)."""
    if isinstance(a, Mapping) != isinstance(b, Mapping):
        raise TypeError("pass two {qid: score} dicts or two aligned sequences, not one of each")
    if isinstance(a, Mapping):
        common = sorted(set(a) & set(b))
        return (np.array([a[q] for q in common], dtype=np.float64),
                np.array([b[q] for q in common], dtype=np.float64))
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired scores must have the same length, got {x.shape} and {y.shape}")
    return x, y


def paired_randomization(a: Scores, b: Scores, n: int = 10000, seed: int = 0) -> float:
    """Two-sided paired randomization (sign-flip) test of mean(a - b) = 0.

    p = (1 + #{|mean of sign-flipped differences| >= |observed mean|}) / (1 + n), which is never
    0 and equals 1 for identical runs."""
    x, y = paired(a, b)
    d = x - y
    if d.size == 0:
        return 1.0
    observed = abs(d.mean())
    # Differences that are exactly equal in float should count as "as extreme"; a relative
    # tolerance keeps summation-order noise from deciding that.
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    rng = np.random.default_rng(seed)
    hits, done, chunk = 0, 0, max(1, min(n, 2_000_000 // d.size))
    while done < n:
        m = min(chunk, n - done)
        signs = rng.integers(0, 2, size=(m, d.size), dtype=np.int8) * 2 - 1
        means = np.abs(signs @ d) / d.size
        hits += int(np.count_nonzero(means >= observed - tol))
        done += m
    return (hits + 1) / (n + 1)


def paired_ttest(a: Scores, b: Scores) -> float:
    """Two-sided paired t-test (scipy.stats.ttest_rel). Identical runs give p = 1 rather than
    scipy's NaN (zero variance of the differences)."""
    from scipy import stats

    x, y = paired(a, b)
    d = x - y
    if d.size < 2 or np.all(d == 0):
        return 1.0
    if np.all(d == d[0]):
        # Zero variance with a non-zero mean: t is infinite, scipy would give NaN.
        return 0.0
    return float(stats.ttest_rel(x, y).pvalue)


def minimal_detectable_difference(a: Scores, b: Scores, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference that a two-sided paired test at level `alpha` detects
    with probability `power`, given the observed spread of the per-query differences:

        MDD = (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd(a - b) / sqrt(n)

    (the standard power calculation for a paired t-test, which the sign-flip randomization test
    matches for more than a few dozen queries). "Not significant" then reads "smaller than MDD",
    not "no difference". Scores averaged over seeds already carry the seeds' reduction of
    variance. NaN for fewer than two pairs."""
    from scipy import stats

    x, y = paired(a, b)
    n = x.size
    if n < 2:
        return float("nan")
    sd = float(np.std(x - y, ddof=1))
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / np.sqrt(n))


def holm(pvalues: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1), same keys.
    A comparison is significant at level alpha iff its adjusted p < alpha."""
    items = sorted(pvalues.items(), key=lambda kv: (kv[1], kv[0]))
    m = len(items)
    out, running = {}, 0.0
    for i, (key, p) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[key] = running
    return {k: out[k] for k in pvalues}


def marker(p: float, alpha: float = 0.05, symbol: str = "\u2020") -> str:
    """The table marker for a significant difference ("†" by default), else ""."""
    return symbol if p is not None and p < alpha else ""


def compare_pairs(pairs: Mapping[Any, tuple[Scores, Scores]], n: int = 10000, seed: int = 0,
                  alpha: float = 0.05) -> dict[Any, dict]:
    """Each (scores, reference scores) pair: mean difference, randomization and t-test p-values,
    the minimal detectable difference at 80 % power, and the Holm-adjusted randomization p over
    the whole family of pairs, with its marker."""
    out = {}
    for key, (scores, ref) in pairs.items():
        x, y = paired(scores, ref)
        out[key] = {"n_queries": int(x.size), "mean_diff": float((x - y).mean()) if x.size else 0.0,
                    "p_randomization": paired_randomization(scores, ref, n=n, seed=seed),
                    "p_ttest": paired_ttest(scores, ref),
                    "mdd": minimal_detectable_difference(scores, ref, alpha=alpha)}
    adjusted = holm({k: v["p_randomization"] for k, v in out.items()})
    for key, row in out.items():
        row["p_holm"] = adjusted[key]
        row["marker"] = marker(adjusted[key], alpha)
    return out


__all__ = ["paired_randomization", "paired_ttest", "minimal_detectable_difference", "holm", "marker", "compare_pairs"]
