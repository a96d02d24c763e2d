"""The export and MTEB rules in a real Snakemake run (embedded scifact-mini, tiny random BERT):
the exports load in a plain Python with HF_HUB_OFFLINE=1 and reproduce the index's embeddings, the
model card's YAML metrics are the run's metrics.json and summary.csv values, and MTEB's NDCG@10
of each model agrees with the pipeline's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tiny_workflow import EXPERIMENT, SEEDS, copy_finished_grid, snakemake

SEED = SEEDS[0]


@pytest.fixture(scope="module")
def exported_grid(tmp_path_factory, finished_run) -> Path:
    """The shared tiny grid, copied, with `evaluation.mteb` on for one seed of its zero-shot and
    in-batch runs: only the export and MTEB jobs (and what they change downstream) run."""
    def edit(config):
        config["seeds"], config["only_runs"] = [SEED], ["zeroshot", "dpr-4"]
        config["evaluation"]["mteb"] = True

    repo = copy_finished_grid(finished_run, tmp_path_factory.mktemp("export-grid") / "repo", edit)
    snakemake(repo)
    return repo


def test_mteb_agrees_with_the_pipeline(exported_grid):
    summary = pd.read_csv(exported_grid / "results" / EXPERIMENT / "tables" / "summary.csv")
    dot = summary[summary.scoring == "dot"]
    assert set(dot.run) == {"zeroshot", "dpr-4"} and dot["mteb_ndcg@10"].notna().all()
    assert np.abs(dot["mteb_ndcg@10"] - dot["ndcg@10"]).max() <= 1e-4
    assert summary[summary.scoring != "dot"]["mteb_ndcg@10"].isna().all()  # MTEB scores the plain dot product only
    result = json.loads((exported_grid / "results" / EXPERIMENT / "mteb/scifact-mini/dpr-4/seed1/mteb.json").read_text())
    assert result["mteb_version"] and result["scores"]["test"][0]["main_score"] == pytest.approx(
        dot[dot.run == "dpr-4"]["mteb_ndcg@10"].iloc[0], abs=1e-6)


def test_model_card_metrics_are_the_runs(exported_grid):
    from pipeline.export.model_card import read_front_matter

    results = exported_grid / "results"
    summary = pd.read_csv(results / EXPERIMENT / "tables" / "summary.csv")
    for run, tag in (("dpr-4", f"seed{SEED}"), ("zeroshot", "base")):
        card = (results / EXPERIMENT / "export" / "scifact-mini" / run / tag / "README.md").read_text()
        meta = read_front_matter(card)
        assert meta["library_name"] == "sentence-transformers" and "scifact-mini" in meta["datasets"]
        assert "base_model" not in meta  # trained from a local folder, which has no hub id
        (entry,) = meta["model-index"][0]["results"]
        assert entry["dataset"] == {"name": "scifact-mini", "type": "scifact-mini", "split": "test",
                                    "config": f"seed{SEED}"}
        values = {(m["config"], m["type"]): m["value"] for m in entry["metrics"]}
        metrics = json.loads((results / EXPERIMENT / "eval" / "scifact-mini" / run / f"seed{SEED}" / "metrics.json").read_text())
        for row in metrics["rows"]:
            label = row["scoring"] if row["lambda"] is None else f"{row['scoring']}@{row['lambda']:g}"
            same_lambda = summary["lambda"].isna() if row["lambda"] is None else summary["lambda"] == row["lambda"]
            line = summary[(summary.run == run) & (summary.scoring == row["scoring"]) & same_lambda]
            for key in ("ndcg@10", "recall@100", "mrr@10"):
                assert values[(label, key.replace("@", "_at_"))] == row[key]
                assert line[key].iloc[0] == pytest.approx(row[key], abs=1e-12)
        train = json.loads((results / EXPERIMENT / "models" / "scifact-mini" / run / tag / "train_summary.json").read_text())
        assert f"| {train['steps']} |" in card or run == "zeroshot"
        manifest = json.loads((results / "data" / "scifact-mini" / "manifest.json").read_text())
        assert manifest["output_sha256"]["corpus.jsonl"] in card
        info = json.loads((results / EXPERIMENT / "export" / "scifact-mini" / run / tag / "export.json").read_text())
        assert info["config_sha256"] and info["config_sha256"] in card and info["code_commit"] in card


# argv: the corpus, then (export folder, output .npy) pairs: one interpreter loads every model.
LOAD = """
import json, sys
import numpy as np
from sentence_transformers import SentenceTransformer
docs = [json.loads(line) for line in open(sys.argv[1])]
texts = [(d.get("title", "") + " " + d.get("text", "")).strip() for d in docs]
for folder, out in zip(sys.argv[2::2], sys.argv[3::2]):
    np.save(out, SentenceTransformer(folder).encode_document(texts, batch_size=16))
"""


def test_exports_load_offline_without_the_pipeline(exported_grid, tmp_path):
    """A plain interpreter (no pipeline on the path, hub offline) reproduces the index's embeddings."""
    results = exported_grid / "results"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_HUB_OFFLINE"] = "1"
    models = {run: (tag, tmp_path / f"{run}.npy") for run, tag in (("dpr-4", f"seed{SEED}"), ("zeroshot", "base"))}
    pairs = [str(a) for run, (tag, out) in models.items()
             for a in (results / EXPERIMENT / "export" / "scifact-mini" / run / tag, out)]
    subprocess.run([sys.executable, "-c", LOAD, str(results / "data" / "scifact-mini" / "corpus.jsonl"), *pairs],
                   check=True, env=env, cwd=tmp_path, capture_output=True, timeout=300)
    for run, (tag, out) in models.items():
        index = np.load(results / EXPERIMENT / "index" / "scifact-mini" / run / tag / "embeddings.npy")
        assert np.abs(np.load(out) - index).max() <= 1e-5, run


def test_make_export_path_reproduces_the_rules_card(exported_grid, tmp_path):
    """`make export` (the --config path) writes the same metadata as the Snakemake rule."""
    from pipeline.export.export import main
    from pipeline.export.model_card import read_front_matter

    out = main(["--config", str(exported_grid / "tiny.yaml"), "--run", "dpr-4", "--seed", str(SEED),
                "--results", str(exported_grid / "results"), "--out", str(tmp_path / "export")])
    rule = exported_grid / "results" / EXPERIMENT / "export" / "scifact-mini" / "dpr-4" / f"seed{SEED}"
    assert read_front_matter((out / "README.md").read_text()) == read_front_matter((rule / "README.md").read_text())
    assert (out / "router_config.json").read_text() == (rule / "router_config.json").read_text()
