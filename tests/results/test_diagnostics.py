"""pipeline.results.diagnostics: each run's train_log.jsonl reduced to one row (means, maxima,
the gradient-norm ratio early and late), seeds averaged, columns a log lacks left empty."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.results.diagnostics import diagnostics_markdown, diagnostics_table, run_diagnostics


def test_diagnostics_reduce_each_log_then_average_seeds(tmp_path):
    rows = [{"step": s, "grad_norm_ratio": float(s), "masked_per_row": 0.5, "false_negatives_per_row": 0.5,
             "effective_negatives_per_row": 10.0, "bank_age_mean": s / 2, "bank_age_max": float(s)}
            for s in range(1, 21)]
    one = run_diagnostics(rows)
    assert one["updates"] == 20 and one["bank age max"] == 20 and one["bank age mean"] == pytest.approx(5.25)
    assert one["grad-norm ratio, first 10%"] == 1.5 and one["grad-norm ratio, last 10%"] == 19.5
    for seed, scale in ((1, 1.0), (2, 3.0)):
        path = tmp_path / f"seed{seed}.jsonl"
        path.write_text("".join(json.dumps({**r, "masked_per_row": scale}) + "\n" for r in rows))
    old = tmp_path / "old.jsonl"  # a log from before the diagnostics: its columns are NaN, not errors
    old.write_text(json.dumps({"step": 1, "grad_norm_ratio": 2.0}) + "\n")
    table = diagnostics_table([("d", "a", tmp_path / "seed1.jsonl"), ("d", "a", tmp_path / "seed2.jsonl"),
                               ("d", "b", old)]).set_index("run")
    assert table.loc["a", "seeds"] == 2 and table.loc["a", "masked / row"] == 2.0
    assert table.loc["b", "grad-norm ratio, last 10%"] == 2.0 and pd.isna(table.loc["b", "bank age mean"])


def test_diagnostics_report_the_state():
    rows = [{"step": s, "loss": 1.0, "state_samples": 8.0 * min(s, 3), "state_age_mean": float(max(0, s - 3))}
            for s in range(1, 7)]
    one = run_diagnostics(rows)
    assert one["sogclr state samples"] == 24 and one["sogclr state age mean"] == pytest.approx(1.0)
    assert np.isnan(run_diagnostics([{"step": 1, "loss": 1.0}])["sogclr state samples"])  # other methods: empty
    assert "sogclr state age mean" in diagnostics_markdown(pd.DataFrame([{"dataset": "d", "run": "r", **one}]))
    assert diagnostics_table([]).empty


def test_loss_over_chance_flags_a_collapsed_run():
    """A run whose loss sits at ln(1 + negatives) scores every candidate alike (a collapsed
    encoder); a learning run sits well below; SogCLR's surrogate loss is not judged."""
    import math

    collapsed = [{"step": s, "loss": math.log(520.0), "effective_negatives_per_row": 519.0} for s in range(1, 21)]
    learning = [{"step": s, "loss": 0.5, "effective_negatives_per_row": 63.0} for s in range(1, 21)]
    sogclr = [{"step": s, "loss": -9.0, "effective_negatives_per_row": 7.0, "state_samples": 8.0} for s in range(1, 21)]
    assert run_diagnostics(collapsed)["loss / chance, last 10%"] == pytest.approx(1.0)
    assert run_diagnostics(learning)["loss / chance, last 10%"] == pytest.approx(0.5 / math.log(64.0))
    assert np.isnan(run_diagnostics(sogclr)["loss / chance, last 10%"])
    assert np.isnan(run_diagnostics([{"step": 1, "grad_norm_ratio": 2.0}])["loss / chance, last 10%"])
