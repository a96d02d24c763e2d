"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1) against real components: a tiny
random-weight BERT that uses MiniLM's real tokenizer, real FAISS, real Snakemake and MLflow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tiny_workflow import copy_workflow_from

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def make_tiny_bert(out: Path, hidden: int = 32, layers: int = 2, dropout: float = 0.0, seed: int = 0) -> Path:
    """Save a tiny random BERT with MiniLM's real tokenizer to `out` (a Hugging Face folder)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.models.encoder import packaged_minilm_path

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(str(packaged_minilm_path()))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=512,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def id_example(qid: str, pid: str, negs=()):
    """A training example whose query, positive and hard negatives carry ids (the false-negative
    mask and the distinct sampler look at the ids)."""
    from pipeline.sources.datasets import Example

    return Example(f"q {qid}", f"p {pid}", [f"p {n}" for n in negs], query_id=qid, positive_id=pid,
                   negative_ids=list(negs))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny BERT folder with dropout off (exact-gradient tests)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_dropout_model_dir(tmp_path_factory) -> Path:
    """The same tiny BERT with dropout 0.1 (RNG-replay tests)."""
    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert-dropout") / "model", dropout=0.1)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "scifact" / "corpus.jsonl").is_file():
        pytest.skip(f"needs {SHARED_DATA} (the shared data folder beside the checkout)")
    return SHARED_DATA


def copy_workflow(dest: Path) -> Path:
    """Copy the repository's workflow files to `dest`, for real Snakemake runs in a temp dir."""
    return copy_workflow_from(REPO, dest)


@pytest.fixture
def repo_copy(tmp_path) -> Path:
    return copy_workflow(tmp_path / "repo")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny grid of tests/tiny_workflow.py run to the end once per session, in a temp copy of
    the workflow (shared by e2e/test_pipeline.py and e2e/test_browser.py). With TINY_RUN_DIR=/some/dir
    the run is made there once and reused by later sessions (for iterating on these tests)."""
    from tiny_workflow import run_tiny_workflow

    keep = os.environ.get("TINY_RUN_DIR")  # iterate on these tests: reuse one finished run across sessions
    if keep and (Path(keep) / "results" / "e2e-tiny" / "tables" / "summary.csv").is_file():
        return Path(keep)
    repo = copy_workflow(Path(keep) if keep else tmp_path_factory.mktemp("e2e") / "repo")
    model = make_tiny_bert(repo / "tiny-bert") if keep else tiny_model_dir
    return run_tiny_workflow(repo, model)


@pytest.fixture(scope="session")
def zero_shot_grid(tmp_path_factory, tiny_model_dir):
    """A finished one-job grid (tiny dataset, zero-shot tiny BERT, dot and DN) built by the real
    steps, without Snakemake: (folder holding grid.yaml, validated config, Layout). Tests read it;
    none may change it."""
    import yaml

    from pipeline.core import config as pcfg
    from pipeline.core.layout import Layout
    from tiny_beir import evaluate_zero_shot

    root = tmp_path_factory.mktemp("zero-shot-grid")
    config = {"experiment": "zero-shot", "datasets": {"tiny": {"source": "embedded"}},
              "encoder": {"model": str(tiny_model_dir)}, "runs": {"zeroshot": {"method": "none"}},
              "evaluation": {"scorings": ["dot", "dn"], "lambdas": [0.5]}, "mlflow": {"enabled": False}}
    (root / "grid.yaml").write_text(yaml.safe_dump(config))
    cfg = pcfg.validate(config)
    layout = Layout(root / "results", "zero-shot")
    evaluate_zero_shot(layout, cfg)
    return root, cfg, layout


@pytest.fixture(scope="session")
def tiny_report(finished_run) -> Path:
    """The Snakemake report of `finished_run`, rendered once for every test that reads it."""
    from tiny_workflow import EXPERIMENT, snakemake

    report = finished_run / "results" / EXPERIMENT / "report.html"
    snakemake(finished_run, "--report", str(report.relative_to(finished_run)))
    return report


@pytest.fixture(scope="session")
def mlflow_ui(finished_run, tmp_path_factory):
    """One `mlflow server` over `finished_run`'s store, as `make ui` starts it, shared by the REST
    and browser tests (each start costs seconds of imports)."""
    from browser import mlflow_server

    with mlflow_server(finished_run / "results" / "mlflow.db", tmp_path_factory.mktemp("mlflow") / "server.log") as base:
        yield base
