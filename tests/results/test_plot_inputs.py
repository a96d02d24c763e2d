"""pipeline.results.plot_inputs: the per-query scores and gradient-norm curves a grid's plots are
drawn from survive the CSV round trip (6 significant digits, order kept, a scoring missing for
some queries left out), the train log is read without its non-finite ratios, and a folder
without them is named."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.core.common import PipelineError
from pipeline.results import plot_inputs


def test_per_query_scores_and_curves_survive_the_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    per_query = {("scifact", run, seed): {"dot": {f"q{i}": float(v) for i, v in enumerate(rng.uniform(size=5))},
                                          "dn@0.25": {f"q{i}": 0.5 for i in range(3)}}
                 for run in ("dpr-8", "contaccum-8x8") for seed in (13, 42)}
    curves = {("scifact", "contaccum-8x8", seed): (np.arange(1.0, 5.0), rng.uniform(0.5, 40, size=4)) for seed in (42, 13)}
    paths = plot_inputs.write(tmp_path, per_query, curves, {("scifact", "contaccum-8x8"): 64})
    assert [p.name for p in paths] == [plot_inputs.PER_QUERY, plot_inputs.GRAD_NORM]

    back = plot_inputs.read(tmp_path)
    assert list(back.per_query) == list(per_query)
    for key, by_scoring in per_query.items():
        assert set(back.per_query[key]) == {"dot", "dn@0.25"}
        assert set(back.per_query[key]["dn@0.25"]) == {"q0", "q1", "q2"}  # not NaN-padded to the dot's 5
        for scoring, scores in by_scoring.items():
            assert back.per_query[key][scoring] == pytest.approx(scores, rel=1e-5)
    (first, second) = back.curves[("scifact", "contaccum-8x8")]  # seed 42 first, as written
    assert first[0].tolist() == [1, 2, 3, 4]
    assert first[1] == pytest.approx(curves[("scifact", "contaccum-8x8", 42)][1], rel=1e-5)
    assert second[1] == pytest.approx(curves[("scifact", "contaccum-8x8", 13)][1], rel=1e-5)
    assert back.examples_per_update == {("scifact", "contaccum-8x8"): 64}


def test_a_train_log_gives_its_finite_ratios(tmp_path):
    log = tmp_path / "train_log.jsonl"
    rows = [{"step": 1, "grad_norm_ratio": 1.5}, {"step": 2, "loss": 0.3}, {"step": 3, "grad_norm_ratio": float("nan")},
            {"step": 4, "grad_norm_ratio": 2.0}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    steps, ratios = plot_inputs.read_ratio(log)
    assert steps.tolist() == [1, 4] and ratios.tolist() == [1.5, 2.0]


def test_a_folder_without_plot_inputs_is_named(tmp_path):
    (tmp_path / plot_inputs.PER_QUERY).write_text("dataset,run,seed,query,dot\n")
    with pytest.raises(PipelineError, match=f"{tmp_path}: no {plot_inputs.GRAD_NORM}.*re-run the grid"):
        plot_inputs.read(tmp_path)
