"""pipeline.results.pilot: a pilot config's runs timed per update on the prepared data, and the
compared pairs of a finished pilot grid read off its summary table."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError
from pipeline.core.layout import Layout
from pipeline.results.pilot import pilot_table, planned_updates, time_markdown, time_runs
from tests.training.test_pairs import small  # noqa: F401  (the small BEIR folder fixture)


def test_pilot_time_and_table(tiny_model_dir, small, tmp_path):
    cfg = pcfg.validate({"datasets": {"small": {"source": "local", "path": str(small)}}, "seeds": [1, 2],
                         "encoder": {"model": str(tiny_model_dir), "query_max_length": 16, "passage_max_length": 24},
                         "runs": {"zs": {"method": "none"}, "a": {"method": "inbatch", "batch_size": 4, "epochs": 3,
                                                                   "pairs": {"sources": ["qrels", "crop"],
                                                                             "crop": {"min_words": 4}}}},
                         "evaluation": {"scorings": ["dot"], "compare": {"a": "zs"}}})
    rows = time_runs(cfg, "small", small)
    assert [(r["run"], r["n_total"], r["pairs_per_epoch"], r["updates"]) for r in rows] == [("a", 4, 21, 15)]
    # A tiny model's 3 timed updates can cost less CPU than the noise between two 1-update runs, so
    # only the sign guard is checked here; the pilot's real encoders take seconds per update.
    assert rows[0]["cpu_sec_per_update"] >= 0 and "2 seed(s)" in time_markdown(rows, 2)
    tables = Layout.for_config(cfg, tmp_path / "results").tables
    tables.mkdir(parents=True)
    common = {"dataset": "small", "scoring": "dot", "lambda": None}
    pd.DataFrame([
        {**common, "run": "zs", "seed": 1, "ndcg@10": 0.30, "sec_per_update": float("nan")},
        {**common, "run": "zs", "seed": 2, "ndcg@10": 0.30, "sec_per_update": float("nan")},
        {**common, "run": "a", "seed": 1, "ndcg@10": 0.40, "sec_per_update": 0.5, "reference": "zs",
         "mean_diff": 0.11, "p_holm": 0.01, "mdd": 0.05},
        {**common, "run": "a", "seed": 2, "ndcg@10": 0.42, "sec_per_update": 0.7, "reference": "zs",
         "mean_diff": 0.11, "p_holm": 0.01, "mdd": 0.05},
    ]).to_csv(tables / "summary.csv", index=False)
    text = pilot_table(tmp_path / "results", cfg)
    assert "| small | a | zs | 0.4100 | 0.3000 | +0.1100 | 0.01 | 0.0500 | 0.600 |" in text


def test_planned_updates_and_a_missing_table(tmp_path):
    assert planned_updates({"max_steps": 7, "epochs": 3}, examples=100, per_update=8) == 7
    assert planned_updates({"max_steps": 0, "epochs": 2}, examples=21, per_update=4) == 10  # 5 full updates an epoch
    cfg = pcfg.validate({"datasets": {"d": {"source": "embedded"}}, "runs": {"zs": {"method": "none"}}})
    with pytest.raises(PipelineError, match="summary.csv: no summary table; run the pilot grid first"):
        pilot_table(tmp_path, cfg)
