"""`pipeline.results.reference`: comparing a re-run with a published table, and refusing to publish
tables that belong to another grid. (The full publish -> fresh re-run -> check round trip runs on
real Snakemake outputs in e2e/test_pipeline.py.)"""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.core.common import PipelineError
from pipeline.results.reference import compare, main, publish_reference, replot_reference

ROWS = [
    {"dataset": "scifact", "run": "dpr-8", "seed": 13, "scoring": "dot", "lambda": None, "ndcg@10": 0.67925},
    {"dataset": "scifact", "run": "dpr-8", "seed": 13, "scoring": "dn", "lambda": 0.25, "ndcg@10": 0.67841},
    {"dataset": "scifact", "run": "dpr-8", "seed": 42, "scoring": "dot", "lambda": None, "ndcg@10": 0.68012},
]


def write(path, rows):
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_matching_rows_pass_and_only_shared_rows_are_compared(tmp_path, capsys):
    reference = write(tmp_path / "reference.csv", ROWS)
    rerun = write(tmp_path / "rerun.csv", [dict(ROWS[1], **{"ndcg@10": 0.67845})])
    joined = compare(reference, rerun, ["ndcg@10"], 1e-4)
    assert len(joined) == 1 and joined["ok"].all()
    main(["check", "--reference", str(reference), "--results", str(rerun)])
    assert "1 row(s) match" in capsys.readouterr().out


def test_a_difference_above_the_tolerance_fails_naming_the_row(tmp_path, capsys):
    reference = write(tmp_path / "reference.csv", ROWS)
    rerun = write(tmp_path / "rerun.csv", [dict(ROWS[0], **{"ndcg@10": 0.67950}), ROWS[2]])
    with pytest.raises(PipelineError, match=r"1 of 2 row\(s\) differ .* dpr-8 seed 13 dot"):
        main(["check", "--reference", str(reference), "--results", str(rerun)])


def diagnostics(folder, loss_over_chance):
    rows = [{"dataset": "scifact", "run": run, "seeds": 1, "loss / chance, last 10%": value}
            for run, value in loss_over_chance.items()]
    pd.DataFrame(rows).to_csv(folder / "diagnostics.csv", index=False)


@pytest.mark.parametrize("rerun_at_chance, fails", [(1.0, False), (0.3, True)])
def test_a_collapse_in_both_passes_only_as_a_reproduced_collapse(tmp_path, capsys, rerun_at_chance, fails):
    """A run whose loss ended at chance in the reference and in the re-run differs in its metrics
    (rounding decides a collapsed model's ranking): reported, not failed, unless --strict. A run
    that collapsed in only one of the two fails like any other."""
    (tmp_path / "ref").mkdir(), (tmp_path / "new").mkdir()
    transfer = dict(ROWS[0], dataset="cranfield")  # evaluated on cranfield, trained on scifact
    reference = write(tmp_path / "ref" / "summary.csv", ROWS + [dict(transfer, **{"ndcg@10": 0.02})])
    rerun = write(tmp_path / "new" / "summary.csv", [dict(ROWS[0], **{"ndcg@10": 0.001}),
                                                     dict(transfer, **{"ndcg@10": 0.01})])
    diagnostics(tmp_path / "ref", {"dpr-8": 1.0002, "dpr-64": 0.16})
    diagnostics(tmp_path / "new", {"dpr-8": rerun_at_chance})
    args = ["check", "--reference", str(reference), "--results", str(rerun)]
    if fails:
        with pytest.raises(PipelineError, match=r"2 of 2 row\(s\) differ"):
            main(args)
        return
    main(args)  # the transfer row counts as collapsed too
    out = capsys.readouterr().out
    assert "0 row(s) match" in out and "2 reproduce a collapse" in out and "float kernels here" in out
    with pytest.raises(PipelineError, match=r"2 of 2 row\(s\) differ"):
        main(args + ["--strict"])


def test_lambda_rows_are_matched_on_their_lambda(tmp_path):
    reference = write(tmp_path / "reference.csv", ROWS)
    rerun = write(tmp_path / "rerun.csv", [dict(ROWS[1], **{"lambda": 0.5})])
    with pytest.raises(PipelineError, match="none of its rows"):
        compare(reference, rerun, ["ndcg@10"], 1e-4)


def test_bad_files_are_named(tmp_path):
    reference = write(tmp_path / "reference.csv", ROWS)
    no_metric = write(tmp_path / "rerun.csv", [{k: v for k, v in ROWS[0].items() if k != "ndcg@10"}])
    with pytest.raises(PipelineError, match=r"rerun.csv: missing column\(s\) \['ndcg@10'\]"):
        compare(reference, no_metric, ["ndcg@10"], 1e-4)
    with pytest.raises(PipelineError, match="absent.csv: file not found"):
        compare(tmp_path / "absent.csv", reference, ["ndcg@10"], 1e-4)
    (tmp_path / "diagnostics.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PipelineError, match=r"diagnostics.csv: not a readable CSV"):
        compare(reference, reference, ["ndcg@10"], 1e-4)


def test_publish_refuses_another_grids_tables_and_keeps_the_old_reference(tmp_path):
    config = tmp_path / "grid.yaml"
    config.write_text("experiment: other\ndatasets: {scifact: {source: embedded}}\nseeds: [13]\n"
                      "runs: {zeroshot: {method: none}, dpr-8: {method: inbatch, batch_size: 8}}\n")
    (tmp_path / "results" / "other" / "tables").mkdir(parents=True)
    write(tmp_path / "results" / "other" / "tables" / "summary.csv", ROWS)  # seeds 13 and 42, no zeroshot
    dest = tmp_path / "reference"
    dest.mkdir()
    (dest / "summary.md").write_text("published earlier")
    with pytest.raises(PipelineError, match=r"summary.csv: its rows are not the grid of this config"):
        publish_reference(tmp_path / "results", config, dest)
    assert (dest / "summary.md").read_text() == "published earlier"


def test_replot_names_a_missing_config_and_missing_plot_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / "provenance.json").write_text('{"config": "config/gone.yaml", "config_sha256": "0"}')
    with pytest.raises(PipelineError, match=r"config/gone.yaml: no such config .*provenance.json names it"):
        replot_reference(reference)
    config = tmp_path / "grid.yaml"
    config.write_text("experiment: other\ndatasets: {scifact: {source: embedded}}\nseeds: [13]\n"
                      "runs: {zeroshot: {method: none}}\n")
    write(reference / "summary.csv", ROWS)
    with pytest.raises(PipelineError, match=r"no per_query.csv or grad_norm.csv.*re-run the grid"):
        replot_reference(reference, config)
