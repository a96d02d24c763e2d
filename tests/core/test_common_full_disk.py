"""Full disk: a write that fails for lack of space (simulated with a file-size limit in the child,
RLIMIT_FSIZE, with SIGXFSZ ignored so the write raises EFBIG) ends the train, index and aggregate
steps with one clear error naming the path and the bytes needed; the previous outputs are intact
and no half-written file is left."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.training import checkpoint
from pipeline.core import config as pcfg
from pipeline.core.layout import Layout
from tests.training.test_train import mini_dataset, recipe, run_train  # noqa: F401  (fixture and helpers)
from tiny_beir import evaluate_zero_shot

REPO = Path(__file__).resolve().parents[2]


def file_size_limit(nbytes: int):
    """preexec_fn: no file may grow past `nbytes` in the child (what a full disk looks like to it)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def step(args: list[str], limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600, preexec_fn=file_size_limit(limit))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


def test_train_full_disk_keeps_the_last_checkpoint(tiny_model_dir, mini_dataset, tmp_path):
    out = tmp_path / "model"
    rec = recipe(tiny_model_dir, max_steps=8, checkpoint_every=3)
    assert run_train(mini_dataset, out, rec, env={"PIPELINE_FAIL_AT_STEP": "5"}).returncode == 2
    before = snapshot(out)
    proc = step(["pipeline.training.train", "--dataset", str(mini_dataset), "--out", str(out), "--recipe-json", json.dumps(rec),
                 "--seed", "3", "--no-progress"], limit=2**20)  # the log fits, a checkpoint (~24 MB) does not
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {out / 'checkpoint-step6.pt'}: no space to write it (")
    needed = int(error.split("no space to write it (")[1].split(" bytes needed")[0])
    assert needed > 2**20 and "file-size limit 1048576 bytes" in error and "Traceback" not in proc.stderr
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != "train_log.jsonl"} == \
        {k: v for k, v in before.items() if k != "train_log.jsonl"}  # the step-3 checkpoint and its digest
    assert checkpoint.verified(out / "checkpoint-step3.pt")
    assert not temporaries(out) and not (out / "train_summary.json").exists()


@pytest.fixture(scope="module")
def zero_shot_grid(tmp_path_factory, tiny_model_dir):
    """A finished one-job grid (tiny dataset, zero-shot tiny BERT) built by the real steps."""
    root = tmp_path_factory.mktemp("full-disk")
    config = {"experiment": "full-disk", "datasets": {"tiny": {"source": "embedded"}},
              "encoder": {"model": str(tiny_model_dir)}, "runs": {"zeroshot": {"method": "none"}},
              "evaluation": {"scorings": ["dot", "dn"], "lambdas": [0.5]}, "mlflow": {"enabled": False}}
    (root / "grid.yaml").write_text(yaml.safe_dump(config))
    cfg = pcfg.validate(config)
    layout = Layout(root / "results", "full-disk")
    evaluate_zero_shot(layout, cfg)
    return root, cfg, layout


def test_index_full_disk_keeps_the_previous_index(zero_shot_grid):
    root, cfg, layout = zero_shot_grid
    index, model = layout.index("tiny", "zeroshot", "base"), layout.model("tiny", "zeroshot", "base") / "model"
    before = snapshot(index)
    proc = step(["pipeline.retrieval.index", "--model", str(model), "--dataset", str(layout.data("tiny")), "--out", str(index),
                 "--params-json", json.dumps(cfg["index"])], limit=1000)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # 40 passages x 32 dimensions x 4 bytes + the .npy header.
    assert f"error: {index / 'embeddings.npy'}: no space to write it ({40 * 32 * 4 + 128} bytes needed" in proc.stderr
    assert snapshot(index) == before and not temporaries(index.parent)


def test_aggregate_full_disk_keeps_the_previous_tables_and_plots(zero_shot_grid):
    root, cfg, layout = zero_shot_grid
    before = {name: snapshot(folder) for name, folder in (("tables", layout.tables), ("plots", layout.plots))}
    assert before["tables"] and before["plots"]
    proc = step(["pipeline.results.aggregate", "--results", str(layout.root), "--config", str(root / "grid.yaml")], limit=400)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {layout.tables}/") and "bytes needed" in error, error
    after = {name: snapshot(folder) for name, folder in (("tables", layout.tables), ("plots", layout.plots))}
    assert after == before and not temporaries(layout.scope)
