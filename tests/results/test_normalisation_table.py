"""pipeline.results.normalisation_table: each normalisation against the plain dot product, one row
per run, scoring and parameter, formatted for people (labels, signed deltas, no raw column names)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.results.normalisation_table import dn_markdown, dn_table
from tests.results.test_verdicts import RUNS, grid


def test_dn_table_is_formatted_for_people():
    frame = pd.DataFrame([{"dataset": "d", "run": "r", "scoring": "dn", "lambda": 0.25, "ndcg@10_dot": 0.5,
                           "ndcg@10": 0.51234, "delta": 0.01234, "p_value": 0.012345, "mdd": 0.02},
                          {"dataset": "d", "run": "r", "scoring": "nnn[k=16]", "lambda": 0.5, "parameters": "k=16 α=0.5",
                           "ndcg@10_dot": 0.5, "ndcg@10": 0.49, "delta": -0.01, "p_value": 0.5, "mdd": 0.03}])
    text = dn_markdown(frame)
    assert "| r | DN | λ=0.25 | 0.5000 | 0.5123 | +0.0123 | 0.0123 | 0.0200 |" in text
    assert "| r | NNN | k=16 α=0.5 | 0.5000 | 0.4900 | −0.0100 | 0.5 | 0.0300 |" in text
    assert "| run | scoring | setting | NDCG@10 dot | NDCG@10 scoring | Δ | p | MDD |" in text
    assert "0.2500" not in text and "ndcg@10_dot" not in text and "p_value" not in text


def test_each_run_is_compared_with_its_own_dot_product():
    frame, per_query = grid(queries=60)
    table = dn_table(frame.assign(**{"lambda": frame["lambda"].astype(float)}), per_query).set_index("run")
    assert list(table.index) == list(RUNS) and set(table.scoring) == {"dn"} and set(table.parameters) == {"λ=0.25"}
    for run, row in table.iterrows():
        runs = frame[frame.run == run]
        dot = runs[runs.scoring == "dot"]["ndcg@10"].mean()
        assert row["ndcg@10_dot"] == pytest.approx(dot)
        assert row["delta"] == pytest.approx(runs[runs.scoring == "dn"]["ndcg@10"].mean() - dot)
        assert 0 < row["p_value"] <= 1 and row["mdd"] > 0
