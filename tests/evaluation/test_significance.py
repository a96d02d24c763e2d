from __future__ import annotations

import numpy as np
import pytest

from pipeline.evaluation.significance import compare_pairs, holm, marker, paired_randomization, paired_ttest


def test_identical_runs_are_not_significant():
    a = np.random.default_rng(0).uniform(size=50)
    assert paired_randomization(a, a, n=2000) == 1.0
    assert paired_ttest(a, a) == 1.0


def test_clearly_better_run_is_significant():
    rng = np.random.default_rng(1)
    base = rng.uniform(size=100)
    better = base + 0.1 + rng.normal(scale=0.05, size=100)
    p = paired_randomization(better, base, n=5000, seed=0)
    assert p == pytest.approx(1 / 5001)
    assert paired_ttest(better, base) < 1e-10
    # Deterministic under the seed, symmetric in the order of the runs.
    assert paired_randomization(better, base, n=5000, seed=0) == p
    assert paired_randomization(base, better, n=5000, seed=0) == p


def test_noise_is_not_significant():
    rng = np.random.default_rng(2)
    a, b = rng.uniform(size=200), rng.uniform(size=200)
    assert paired_randomization(a, b, n=5000) > 0.05


def test_dict_inputs_use_shared_query_ids():
    a = {"q1": 1.0, "q2": 0.0, "q3": 0.5}
    b = {"q2": 0.0, "q3": 0.5, "q4": 0.2}
    assert paired_randomization(a, b, n=100) == 1.0


def test_holm_known_example():
    # m = 4: sorted p 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5.
    adj = holm({"a": 0.03, "b": 0.01, "c": 0.5, "d": 0.02})
    assert adj == pytest.approx({"a": 0.06, "b": 0.04, "c": 0.5, "d": 0.06})
    assert holm({"x": 0.6, "y": 0.7}) == pytest.approx({"x": 1.0, "y": 1.0})


def test_marker_and_compare():
    assert marker(0.01) == "\u2020" and marker(0.2) == "" and marker(0.01, symbol="*") == "*"
    rng = np.random.default_rng(3)
    ref = {str(i): float(v) for i, v in enumerate(rng.uniform(size=60))}
    runs = {"ref": ref, "same": dict(ref), "better": {k: v + 0.2 + 0.01 * rng.normal() for k, v in ref.items()}}
    out = compare_pairs({name: (scores, runs["ref"]) for name, scores in runs.items() if name != "ref"}, n=2000)
    assert out["same"]["p_holm"] == 1.0 and out["same"]["marker"] == ""
    assert out["better"]["marker"] == "\u2020" and out["better"]["mean_diff"] == pytest.approx(0.2, abs=0.01)


def test_minimal_detectable_difference_has_the_stated_power():
    """Simulate paired per-query scores whose true mean difference is the MDD computed from one
    observed sample: the paired t-test then rejects at alpha 0.05 in about 80 % of trials, and the
    randomization test in about as many."""
    from pipeline.evaluation.significance import minimal_detectable_difference

    rng = np.random.default_rng(7)
    n, sd = 120, 0.25
    base = rng.uniform(0, 1, size=n)
    observed = base + rng.normal(0, sd, size=n)
    mdd = minimal_detectable_difference(observed, base)
    assert mdd == pytest.approx((1.98 + 0.845) * np.std(observed - base, ddof=1) / np.sqrt(n), rel=0.01)
    true_sd = np.std(observed - base, ddof=1)
    hits_t = hits_r = 0
    for trial in range(1500):
        other = base + rng.normal(mdd, true_sd, size=n)
        hits_t += paired_ttest(other, base) < 0.05
        if trial < 150:
            hits_r += paired_randomization(other, base, n=400, seed=trial) < 0.05
    assert hits_t / 1500 == pytest.approx(0.80, abs=0.04)
    assert hits_r / 150 == pytest.approx(0.80, abs=0.10)
    # Half the MDD is detected far less often: "not significant" means "smaller than MDD".
    weak = sum(paired_ttest(base + rng.normal(mdd / 2, true_sd, size=n), base) < 0.05 for _ in range(500)) / 500
    assert weak < 0.4
    assert np.isnan(minimal_detectable_difference([0.1], [0.2]))


def test_a_run_can_be_tested_against_its_own_reference():
    """evaluation.compare: the mask run is paired with its keep run, the rest with reference_run."""
    import numpy as np
    import pandas as pd

    from pipeline.results.verdicts import p_cell, significance

    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, 200)
    scores = {"dpr": base, "dpr-mask": base + 0.05 + rng.normal(0, 0.01, 200), "other": base + rng.normal(0, 0.01, 200)}
    per_query = {("d", run, 1): {"dot": {f"q{i}": float(v) for i, v in enumerate(vals)}}
                 for run, vals in scores.items()}
    frame = pd.DataFrame([{"dataset": "d", "run": run, "scoring": "dot", "lambda": np.nan} for run in scores])
    sig = significance(frame, per_query, "other", 2000, compare={"dpr-mask": "dpr"})
    rows = sig.set_index("run")
    assert rows.loc["dpr-mask", "reference"] == "dpr" and rows.loc["dpr", "reference"] == "other"
    assert rows.loc["dpr-mask", "mean_diff"] == pytest.approx(0.05, abs=0.003)
    assert rows.loc["dpr-mask", "p_holm"] < 0.05
    assert " vs dpr |" in p_cell(sig, "other", "d", "dpr-mask", "dot", np.nan)
    assert p_cell(sig, "other", "d", "other", "dot", np.nan) == "ref | –"
    assert " vs " not in p_cell(sig, "other", "d", "dpr", "dot", np.nan)
    # A dot-only grid's lambda column holds None: the test columns still join on.
    from pipeline.results.verdicts import attach_significance

    joined = attach_significance(frame.assign(**{"lambda": None}), sig).set_index("run")
    assert joined.loc["dpr-mask", "reference"] == "dpr" and joined.loc["dpr-mask", "p_holm"] < 0.05
