"""A real Snakemake run of the whole chain on a tiny grid in a temp dir (tests/tiny_workflow.py:
embedded scifact-mini, a tiny random BERT, two trained methods plus zero-shot, two seeds,
dot/DN/DN* and an HNSW index; run once per session by conftest.py's `finished_run`). Checks the
tables, the plots, the report and the MLflow store read back with the client."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tiny_workflow import EXPERIMENT, RUNS, SEEDS, copy_finished_grid, snakemake  # the shared grid; `finished_run` is in conftest.py

TRAINED_RUN = "dpr-4"


def test_summary_table(finished_run):
    frame = pd.read_csv(finished_run / "results" / EXPERIMENT / "tables" / "summary.csv")
    for column in ("dataset", "run", "seed", "scoring", "ndcg@10", "recall@100", "mrr@10", "lambda"):
        assert column in frame.columns
    assert set(frame.run) == set(RUNS) and set(frame.seed) == set(SEEDS)
    assert set(frame.scoring) == {"dot", "dn", "dn*"}
    # one dot row + two lambdas for each of dn and dn*, per job
    assert len(frame) == len(RUNS) * len(SEEDS) * 5
    assert frame["ndcg@10"].between(0, 1).all()
    assert frame[frame.run != "zeroshot"]["p_value"].notna().all()
    md = (finished_run / "results" / EXPERIMENT / "tables" / "summary.md").read_text()
    assert "contaccum-4x2" in md and "±" in md
    headline = (finished_run / "results" / EXPERIMENT / "tables" / "headline.md").read_text().splitlines()
    rows = {line.split(" | ")[0].lstrip("| "): line for line in headline if line.startswith("| ")}
    assert {"zeroshot", "dpr-4", "contaccum-4x2"} <= set(rows) and "p vs zeroshot" in rows["run"]
    assert "| 8 | 8 |" in rows["contaccum-4x2"]  # N_total 4x2, bank of 8 samples


def test_training_logs_and_plots(finished_run):
    import json

    log = finished_run / "results" / EXPERIMENT / "models" / "scifact-mini" / "contaccum-4x2" / "seed1" / "train_log.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    # one BM25 hard negative per query: [pos_cur; pos_bank; hn_cur; hn_bank] -> 4 + 8 + 4 + 8 passages at step 3
    assert rows[-1]["negatives_per_query"] == 4 + 8 + 4 + 8 - 1
    assert (finished_run / "results" / "hardneg" / "scifact-mini.jsonl").stat().st_size > 0
    for key in ("loss", "lr", "grad_norm_query", "grad_norm_passage", "grad_norm_ratio", "seconds", "peak_mem_mb",
                "bank_fill", "negatives_per_query", "false_negatives_per_row", "masked_per_row",
                "effective_negatives_per_row", "bank_age_mean", "bank_age_max"):
        assert key in rows[0]
    # The default masks known positives: what is masked is what was found, and comes off the negatives.
    assert all(r["masked_per_row"] == r["false_negatives_per_row"] for r in rows)
    assert rows[-1]["effective_negatives_per_row"] == pytest.approx(rows[-1]["negatives_per_query"] -
                                                                     rows[-1]["masked_per_row"])
    assert rows[0]["bank_age_max"] == 0 and rows[-1]["bank_age_max"] >= 1
    diagnostics = pd.read_csv(finished_run / "results" / EXPERIMENT / "tables" / "diagnostics.csv").set_index("run")
    assert "zeroshot" not in diagnostics.index and diagnostics.loc["contaccum-4x2", "updates"] == 3
    assert diagnostics.loc["contaccum-4x2", "bank age max"] == max(
        max(json.loads(line)["bank_age_max"] for line in path.read_text().splitlines())
        for path in log.parent.parent.glob("seed*/train_log.jsonl"))
    assert pd.isna(diagnostics.loc["dpr-4", "bank age mean"])
    assert diagnostics["loss / chance, last 10%"].between(0, 2).all()  # every trained run here is InfoNCE
    assert "| contaccum-4x2 |" in (finished_run / "results" / EXPERIMENT / "tables" / "diagnostics.md").read_text()
    for name in ("ndcg_per_run", "ndcg_vs_batch", "accuracy_vs_cost", "grad_norm_ratio", "dn_lambda"):
        for ext in ("png", "svg"):
            assert (finished_run / "results" / EXPERIMENT / "plots" / f"{name}.{ext}").stat().st_size > 0


def test_mlflow_runs_and_idempotence(finished_run):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{finished_run / 'results' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("e2e-tiny")
    assert "| contaccum-4x2 |" in experiment.tags["mlflow.note.content"]  # the headline table
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get("pipeline.level") == "seed"]
    parents = [r for r in runs if r.data.tags.get("pipeline.level") == "parent"]
    trained = [run for run, recipe in RUNS.items() if recipe["method"] != "none"]
    # The zero-shot model does not depend on the seed: one run, no seed children.
    assert len(children) == len(trained) * len(SEEDS) and len(parents) == len(RUNS)
    zeroshot = next(r for r in parents if r.data.tags["run"] == "zeroshot")
    assert {"seed1", "seed2"} <= {a.path for a in client.list_artifacts(zeroshot.info.run_id)}
    # The UI opens the experiment on its model-training runs table, not the GenAI view.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    child = next(r for r in children if r.data.tags["run"] == "contaccum-4x2")
    assert child.info.run_name == f"contaccum-4x2 seed{child.data.tags['seed']}"
    assert {"ndcg_10.dot", "recall_100.dot", "ndcg_10.dnstar-0.25", "ndcg_10.dn-0.5", "n_total", "memory_size",
            "cost.peak_mem_mb", "cost.sec_per_update"} <= set(child.data.metrics)
    assert child.data.metrics["n_total"] == 8 and child.data.metrics["memory_size"] == 8
    assert child.data.params["method"] == "contaccum" and child.data.tags["git_commit"]
    assert child.data.tags["mlflow.source.name"] == "Snakefile"
    # The evaluated dataset as an MLflow input (the runs table's Dataset column).
    inputs = client.get_run(child.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.source_type) for i in inputs] == [("scifact-mini", "local")]
    assert inputs[0].dataset.digest == child.data.tags["dataset_sha256"][:36]
    assert "mlflow_colspec" in inputs[0].dataset.schema
    # Readable precision: what the markdown tables keep (4 decimals; memory to 0.1 MB).
    assert child.data.metrics["ndcg_10.dot"] == round(child.data.metrics["ndcg_10.dot"], 4)
    assert child.data.metrics["cost.peak_mem_mb"] == round(child.data.metrics["cost.peak_mem_mb"], 1)
    # The dataset checksum is one real digest, not the '{}' of a misread manifest.
    assert len(child.data.tags["dataset_sha256"]) == 64
    history = client.get_metric_history(child.info.run_id, "train.loss")
    assert [m.step for m in history] == [1, 2, 3]
    for diagnostic in ("train.masked_per_row", "train.effective_negatives_per_row", "train.bank_age_mean",
                       "train.bank_age_max", "train.grad_norm_ratio"):
        assert [m.step for m in client.get_metric_history(child.info.run_id, diagnostic)] == [1, 2, 3], diagnostic
    # Real wall-clock times: run duration covers training and evaluation, curve points carry
    # the time they were logged, and no overall peak is logged as a step-0 curve point.
    log_rows = [__import__("json").loads(line) for line in (finished_run / "results" / EXPERIMENT / "models" / "scifact-mini" /
                "contaccum-4x2" / f"seed{child.data.tags['seed']}" / "train_log.jsonl").read_text().splitlines()]
    assert [m.timestamp for m in history] == [int(r["time"] * 1000) for r in log_rows]
    assert child.info.start_time < history[0].timestamp <= child.info.end_time
    assert child.info.start_time > 1.7e12  # not 1970
    assert [m.step for m in client.get_metric_history(child.info.run_id, "train.peak_mem_mb")] == [1, 2, 3]
    summary = pd.read_csv(finished_run / "results" / EXPERIMENT / "tables" / "summary.csv")
    row = summary[(summary.run == "contaccum-4x2") & (summary.seed == int(child.data.tags["seed"])) &
                  (summary.scoring == "dot")]
    assert child.data.metrics["ndcg_10.dot"] == pytest.approx(float(row["ndcg@10"].iloc[0]), abs=5e-5)
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
    assert {"metrics.json", "train_log.jsonl", "resolved_config.json", "runs"} <= artifacts
    # Parents carry the same keys (mean over seeds), std under its own key, the p-value, the tables.
    parent = next(r for r in parents if r.data.tags["run"] == "contaccum-4x2")
    assert parent.info.run_name == "contaccum-4x2"
    dot = summary[(summary.run == "contaccum-4x2") & (summary.scoring == "dot")]["ndcg@10"]
    assert parent.data.metrics["ndcg_10.dot"] == pytest.approx(float(dot.mean()), abs=5e-5)
    assert parent.data.metrics["ndcg_10.dot.std"] == pytest.approx(float(dot.std(ddof=1)), abs=5e-5)
    # The parent carries the mean training curve over its seeds (the chart view shows it unexpanded).
    mean_loss = pd.DataFrame([json.loads(line) for seed in SEEDS for line in (
        finished_run / "results" / EXPERIMENT / "models" / "scifact-mini" / "contaccum-4x2" / f"seed{seed}" / "train_log.jsonl"
    ).read_text().splitlines()]).groupby("step")["loss"].mean()
    history = client.get_metric_history(parent.info.run_id, "train.loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(mean_loss.tolist(), rel=1e-3)
    assert "p.dot" in parent.data.metrics and "ndcg_10.dot.std" not in child.data.metrics
    assert {"tables", "plots"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}

    # Re-running the aggregation (what a second `make run` does) must not duplicate runs.
    snakemake(finished_run, "--forcerun", "aggregate")
    again = client.search_runs([experiment.experiment_id], max_results=1000)
    assert len(again) == len(runs)


def test_store_can_be_read_while_it_is_written(finished_run):
    """Readers (the UI, a notebook) may query the store while the aggregate step logs to it."""
    import json as _json

    from mlflow.tracking import MlflowClient

    import yaml as _yaml

    config = _yaml.safe_load((finished_run / "tiny.yaml").read_text())
    config["experiment"] = "e2e-concurrent"
    from pipeline.core import config as pcfg

    # Another experiment reads its own folder (results/<experiment>/): give it a copy of the grid's outputs.
    import shutil

    shutil.copytree(finished_run / "results" / EXPERIMENT, finished_run / "results" / "e2e-concurrent",
                    ignore=shutil.ignore_patterns("tables", "plots", "mlartifacts"), dirs_exist_ok=True)

    writer = subprocess.Popen([sys.executable, "-m", "pipeline.results.aggregate", "--results", "results", "--config-json",
                               _json.dumps(pcfg.validate(config))], cwd=finished_run,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    client = MlflowClient(tracking_uri=f"sqlite:///{finished_run / 'results' / 'mlflow.db'}")
    reads = 0
    while writer.poll() is None or reads == 0:
        for experiment in client.search_experiments():
            client.search_runs([experiment.experiment_id], max_results=1000)
        reads += 1
    assert writer.returncode == 0, writer.stdout.read()
    experiment = client.get_experiment_by_name("e2e-concurrent")
    trained = sum(recipe["method"] != "none" for recipe in RUNS.values())
    assert len(client.search_runs([experiment.experiment_id], max_results=1000)) == trained * (len(SEEDS) + 1) + \
        len(RUNS) - trained
    assert reads > 1


def test_rerun_is_a_no_op(finished_run):
    proc = snakemake(finished_run, "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_snakemake_report_has_every_table_and_plot(tiny_report):
    from pipeline.results.plots import PLOTS

    html = tiny_report.read_text(errors="replace")
    for name in ("summary.html", "headline.html", "dn.html", "index.html", *(f"{p}.png" for p in PLOTS)):
        assert name in html, name
    assert "mailto:" not in html  # captions say NDCG@10, not a link to an address


def test_mlflow_server_rest_api(mlflow_ui):
    """The runs and a training curve through the REST API of `mlflow server` (conftest's `mlflow_ui`)."""
    import json
    import urllib.request

    def call(path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{mlflow_ui}/api/2.0/mlflow{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    experiment = call("/experiments/get-by-name?experiment_name=e2e-tiny")["experiment"]
    runs = call("/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})["runs"]
    trained = sum(recipe["method"] != "none" for recipe in RUNS.values())
    assert len(runs) == trained * len(SEEDS) + len(RUNS)  # seed children of trained runs + one parent each
    trained = next(r for r in runs if any(t["key"] == "pipeline.level" and t["value"] == "seed"
                                          for t in r["data"]["tags"])
                   and any(t["key"] == "run" and t["value"] == "dpr-4" for t in r["data"]["tags"]))
    history = call(f"/metrics/get-history?run_id={trained['info']['run_id']}&metric_key=train.loss")["metrics"]
    assert [m["step"] for m in history] == [1, 2, 3]


def _publish(finished_run):
    """`pipeline.results.reference publish` of the tiny grid to results/reference/e2e (once a session)."""
    reference = finished_run / "results" / "reference" / "e2e"
    if (reference / "provenance.json").is_file():
        return reference
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    published = subprocess.run([sys.executable, "-m", "pipeline.results.reference", "publish", "--config", "tiny.yaml",
                                "--to", "results/reference/e2e"], cwd=finished_run, env=env,
                               capture_output=True, text=True)
    assert published.returncode == 0, published.stderr
    return reference


def test_a_finished_grid_publishes_its_reference(finished_run):
    reference = _publish(finished_run)
    assert {"summary.md", "summary.csv", "dn.md", "index.md", "grad_norm_ratio.png", "provenance.json"} <= {
        p.name for p in reference.iterdir()}
    provenance = json.loads((reference / "provenance.json").read_text())
    assert provenance["datasets"]["scifact-mini"]["counts"]["docs"] == 1000
    assert provenance["numerics"]["torch_cpu_capability"] and provenance["numerics"]["faiss_simd_level"]



def test_a_published_reference_redraws_its_plots_unchanged(finished_run, tmp_path):
    """`replot` draws a reference's plots from its own copies (summary.csv, per_query.csv,
    grad_norm.csv) alone: after a change to the plots, no grid needs re-running."""
    reference = tmp_path / "e2e"
    shutil.copytree(_publish(finished_run), reference)
    drawn = sorted(reference.glob("*.png"))
    for png in drawn:
        png.unlink()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    replotted = subprocess.run([sys.executable, "-m", "pipeline.results.reference", "replot", "--reference", str(reference)],
                               cwd=finished_run, env=env, capture_output=True, text=True)
    assert replotted.returncode == 0, replotted.stderr
    assert sorted(reference.glob("*.png")) == drawn and len(drawn) == 5
    plots = finished_run / "results" / EXPERIMENT / "plots"
    for png in drawn:
        assert png.read_bytes() == (plots / png.name).read_bytes(), f"{png.name} differs from the grid's own"

# slow: a second run of `finished_run`'s path (CI: test_summary_table); CI keeps same-seed determinism in
# tests/training/test_train.py::test_same_seed_gives_identical_weights_and_metrics.
@pytest.mark.slow
def test_published_row_reproduces_in_a_fresh_copy(finished_run, tmp_path):
    """What a committed reference table promises: one run x seed re-run from scratch, in another
    checkout, gives the published scores (the acceptance check of results/reference/)."""
    import shutil

    from conftest import copy_workflow

    reference = _publish(finished_run)
    fresh = copy_workflow(tmp_path / "fresh")
    shutil.copy2(finished_run / "tiny.yaml", fresh / "tiny.yaml")
    snakemake(fresh, "--config", "only_runs=[contaccum-4x2]", "seeds=[2]")
    check = subprocess.run([sys.executable, "-m", "pipeline.results.reference", "check", "--config", "tiny.yaml", "--reference",
                            str(reference / "summary.csv"), "--metric", "ndcg@10", "--metric", "recall@100"],
                           cwd=fresh, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "5 row(s) match" in check.stdout  # dot + dn and dn* at two lambdas


def test_an_entry_evaluates_another_entrys_models_without_retraining(finished_run, tmp_path):
    """`models_of` (MS MARCO dev next to TREC-DL 2019): a second dataset entry adds evaluate jobs
    only, on the first entry's models, index and data. `trained_on` (transfer): a third entry
    prepares and indexes its own corpus with the first entry's models. Both hold the same data
    here, so both must give the first entry's metrics exactly. One seed and one trained run of the
    grid (`only_runs`): the smallest grid that still reads a trained model across entries."""
    def edit(config):
        config["datasets"]["mini-again"] = {"models_of": "scifact-mini", "test_split": "test"}
        config["datasets"]["mini-transfer"] = {"trained_on": "scifact-mini", "source": "embedded",
                                               "name": "scifact-mini"}
        config["seeds"], config["only_runs"] = SEEDS[:1], [TRAINED_RUN]

    repo = copy_finished_grid(finished_run, tmp_path / "repo", edit)
    dry = snakemake(repo, "-n").stdout
    planned = {line.split()[0]: int(line.split()[1]) for line in dry.lower().split("job stats:", 1)[-1].splitlines()
               if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert planned.get("evaluate") == 2, dry[-2000:]
    assert (planned.get("data"), planned.get("index")) == (1, 1), planned  # the transfer entry's own
    assert not {"train", "hardneg"} & set(planned), planned
    snakemake(repo)
    frame = pd.read_csv(repo / "results" / EXPERIMENT / "tables" / "summary.csv")
    base, again, transfer = (frame[frame.dataset == d].drop(columns="dataset").reset_index(drop=True)
                             for d in ("scifact-mini", "mini-again", "mini-transfer"))
    assert len(again) == len(transfer) == len(base) > 0
    for other in (again, transfer):
        pd.testing.assert_frame_equal(other[["run", "seed", "scoring", "ndcg@10", "recall@100"]],
                                      base[["run", "seed", "scoring", "ndcg@10", "recall@100"]])
    for entry in ("mini-again", "mini-transfer"):
        assert not (repo / "results" / EXPERIMENT / "models" / entry).exists()
    assert (repo / "results" / EXPERIMENT / "index" / "mini-transfer").is_dir()


def test_mlflow_artifacts_survive_moving_results(finished_run, tmp_path):
    """A copied or moved results folder: `make ui` (pipeline.results.mlflow_ui) points the store at the
    artifacts beside it, and the runs' files open from there."""
    import shutil

    from mlflow.tracking import MlflowClient

    from pipeline.results.mlflow_ui import main as mlflow_main

    moved = tmp_path / "elsewhere" / "results"
    shutil.copytree(finished_run / "results", moved, ignore=shutil.ignore_patterns("models", "index", "shards"))
    config = (finished_run / "tiny.yaml").read_text()
    (tmp_path / "elsewhere" / "tiny.yaml").write_text(config)
    cwd = os.getcwd()
    os.chdir(tmp_path / "elsewhere")
    try:
        mlflow_main(["--config", "tiny.yaml", "--port", "5123"])
    finally:
        os.chdir(cwd)
    client = MlflowClient(tracking_uri=f"sqlite:///{moved / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("e2e-tiny")
    assert experiment.artifact_location.startswith((moved / "e2e-tiny" / "mlartifacts").as_uri())
    run = client.search_runs([experiment.experiment_id], "tags.`pipeline.level` = 'seed'", max_results=1)[0]
    local = client.download_artifacts(run.info.run_id, "metrics.json", str(tmp_path))
    assert json.loads(open(local).read())["rows"]


def test_plots_give_every_run_its_own_colour(finished_run):
    """Read from the drawn artists (plots/colours.json), not pixels: no two runs share a colour,
    and a run has the same colour in every plot."""
    record = json.loads((finished_run / "results" / EXPERIMENT / "plots" / "colours.json").read_text())
    colours = record["run_colours"]
    assert set(colours) == set(RUNS) and len(set(colours.values())) == len(RUNS)
    for plot, drawn in record["plots"].items():
        for run, shades in drawn.items():
            assert shades == [colours[run]], f"{plot}: {run} drawn in {shades}, its colour is {colours[run]}"
    assert set(record["plots"]["ndcg_per_run"]) == set(RUNS)
    # MLflow draws every run in the same colour as the plots.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{finished_run / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("e2e-tiny")
    for run in client.search_runs([experiment.experiment_id], max_results=1000):
        assert run.data.tags["mlflow.runColor"] == colours[run.data.tags["run"]], run.info.run_name
