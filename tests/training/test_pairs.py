"""pipeline.training.pairs, a regime with room to learn: training pairs derived from the corpus
(title, crops), truncated and random-shape encoders trained on them, and the regime's config
checks (the shapes themselves: tests/models/test_encoder_shape.py; the dev split:
tests/sources/test_dev_split.py)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError
from pipeline.core.config import TRAINING_DEFAULTS, ConfigError
from pipeline.sources.datasets import Dataset, load_dataset
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.pairs import Cropper, TrainingData, title_pairs
from pipeline.training.sampler import _ids, update_plan
from pipeline.training.checkpoint import latest as latest_checkpoint
from pipeline.training.hooks import FaultInjection
from pipeline.training.train import train

SHAPE = {"layers": 2, "hidden": 32, "heads": 2, "intermediate": 64}
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma".split()


def write_folder(root: Path, n_docs: int = 12, titles: bool = True) -> Path:
    """A small BEIR folder: passages of 6..17 words, 8 train queries, 4 test queries."""
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as fh:
        for i in range(n_docs):
            text = " ".join(f"{w}{i}" for w in WORDS[:6 + i])
            fh.write(json.dumps({"_id": f"d{i}", "title": f"title {i}" if titles else "", "text": text}) + "\n")
    with open(root / "queries.jsonl", "w") as fh:
        for q in range(12):
            fh.write(json.dumps({"_id": f"q{q}", "text": f"question {q} about {WORDS[q]}"}) + "\n")
    for split, qs in (("train", range(8)), ("test", range(8, 12))):
        rows = [f"q{q}\td{q % n_docs}\t1" for q in qs] + (["q0\td5\t1"] if split == "train" else [])
        (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture
def small(tmp_path) -> Path:
    return write_folder(tmp_path / "small")


def pairs(*sources, min_words=4, max_words=8):
    return {"sources": list(sources), "crop": {"min_words": min_words, "max_words": max_words}}


def recipe(model, **overrides):
    return {**TRAINING_DEFAULTS, "method": "gradcache", "batch_size": 2, "accumulation_steps": 2, "max_steps": 1,
            "lr": 1e-3, "warmup_ratio": 0.0, "train_split": "train",
            "encoder": {"model": str(model), "tied": False, "query_max_length": 16, "passage_max_length": 24},
            **overrides}


# ----------------------------------------------------------------------------- pairs
def test_crops_are_deterministic_per_seed_and_epoch_and_keep_ids(small):
    ds = load_dataset(small)
    cropper = Cropper(ds, 4, 8)
    first, again = cropper.epoch(7, 0), Cropper(ds, 4, 8).epoch(7, 0)
    assert [(e.query, e.positive) for e in first] == [(e.query, e.positive) for e in again]
    assert [(e.query, e.positive) for e in first] != [(e.query, e.positive) for e in cropper.epoch(7, 1)]
    assert [(e.query, e.positive) for e in first] != [(e.query, e.positive) for e in cropper.epoch(8, 0)]
    assert [e.positive_id for e in first] == list(ds.corpus)
    assert [e.query_id for e in first] == [f"crop:{d}" for d in ds.corpus]
    for example in first:
        text = ds.corpus[example.positive_id]["text"]
        for span in (example.query, example.positive):
            assert 4 <= len(span.split()) <= 8 and span in text


def test_crops_clamp_to_the_passage_and_skip_short_ones(small):
    ds = load_dataset(small)  # passages have 6..17 words
    cropper = Cropper(ds, 10, 40)
    assert cropper.skipped == 4 and len(cropper.passages) == 8
    for example in cropper.epoch(0, 0):
        n = len(ds.corpus[example.positive_id]["text"].split())
        assert all(10 <= len(s.split()) <= n for s in (example.query, example.positive))
    with pytest.raises(PipelineError, match="min_words is 18 but the longest passage text has 17 words"):
        Cropper(ds, 18, 40)


def test_title_pairs_keep_ids_and_need_titles(small, tmp_path):
    ds = load_dataset(small)
    titles = title_pairs(ds)
    assert [(e.query, e.query_id, e.positive_id) for e in titles[:2]] == [("title 0", "title:d0", "d0"),
                                                                          ("title 1", "title:d1", "d1")]
    assert titles[0].positive == ds.corpus["d0"]["text"]
    untitled = load_dataset(write_folder(tmp_path / "untitled", titles=False))
    with pytest.raises(PipelineError, match="'title' but none of its 12 passages has both a title and a text"):
        TrainingData(untitled, "train", pairs=pairs("qrels", "title"))


def test_training_data_mixes_sources_with_masks_for_derived_queries(small):
    ds = load_dataset(small)
    data = TrainingData(ds, "train", pairs=pairs("qrels", "title", "crop"), seed=3)
    e0, e1 = list(data.epoch(0)), list(data.epoch(1))
    assert len(e0) == len(e1) == 9 + 12 + 12
    assert e0[:21] == e1[:21] and e0[21:] != e1[21:]  # qrels and titles fixed, crops redrawn
    positives = data.known_positives()
    assert positives["q0"] == {"d0", "d5"} and positives["crop:d3"] == {"d3"} and positives["title:d3"] == {"d3"}
    only_crops = TrainingData(ds, "train", pairs=pairs("crop"), seed=3).epoch(0)
    assert [e.query_id for e in only_crops] == [f"crop:d{i}" for i in range(12)]
    record = data.provenance()["pairs"]
    assert record["per_epoch"] == {"qrels": 9, "title": 12, "crop": 12}


def test_distinct_sampler_never_puts_two_pairs_of_one_passage_in_an_update(small):
    ds = load_dataset(small)
    data = TrainingData(ds, "train", pairs=pairs("qrels", "title", "crop"), seed=1)
    plan = update_plan(data.epoch, 6, seed=1, sampler="distinct")
    for _ in range(8):
        _, examples, indices = next(plan)
        ids = [i for idx in indices for i in _ids(examples[idx]) if i.startswith("p:")]
        assert len(ids) == len(set(ids))


@pytest.mark.parametrize("shape", [None, SHAPE])
def test_crop_training_resumes_at_the_same_update(tiny_dropout_model_dir, small, tmp_path, shape):
    # 9 qrels + 12 crops = 21 pairs, 5 updates of 4 per epoch: the resumed part crosses epochs.
    # With a shape, the random start is redrawn on resume and then replaced by the checkpoint's.
    rec = recipe(tiny_dropout_model_dir, max_steps=8, checkpoint_every=3, pairs=pairs("qrels", "crop"))
    if shape:
        rec["encoder"] = {**rec["encoder"], "random_init": True, "shape": shape}
    full = train(str(small), str(tmp_path / "full"), rec, seed=5, progress=False)
    with pytest.raises(PipelineError, match="non-finite"):
        train(str(small), str(tmp_path / "cut"), rec, seed=5, progress=False, hooks=FaultInjection(fail_at_step=7))
    assert latest_checkpoint(tmp_path / "cut") is not None
    resumed = train(str(small), str(tmp_path / "cut"), rec, seed=5, progress=False)
    assert resumed["resumed_from_step"] == 6 and full["steps"] == resumed["steps"] == 8

    def losses(out):
        return [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]

    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-6)
    assert resumed["pairs"]["per_epoch"] == {"qrels": 9, "title": 0, "crop": 12}


# ----------------------------------------------------------------------------- encoders
def state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("encoder,tied", [({"layers": 1}, True), ({"layers": 1}, False),
                                          ({"random_init": True, "shape": SHAPE}, True),
                                          ({"random_init": True, "shape": SHAPE}, False)])
def test_shaped_encoders_train_one_update_and_reload_equal(small, tmp_path, encoder, tied):
    rec = recipe("all-MiniLM-L6-v2", method="contaccum", memory_size=4,
                 encoder={"model": "all-MiniLM-L6-v2", "tied": tied, "query_max_length": 16,
                          "passage_max_length": 24, **encoder})
    summary = train(str(small), str(tmp_path / "run"), rec, seed=4, progress=False)
    depth = encoder.get("layers") or SHAPE["layers"]
    assert summary["steps"] == 1 and summary["encoder"]["num_hidden_layers"] == depth
    assert summary["encoder"]["layers"] == encoder.get("layers") and summary["encoder"]["shape"] == encoder.get("shape")
    saved = json.loads((tmp_path / "run" / "model" / "bi_encoder.json").read_text())["spec"]
    assert saved["layers"] == encoder.get("layers") and saved["shape"] == encoder.get("shape")
    reloaded = BiEncoder.load(tmp_path / "run" / "model")
    assert reloaded.query_model.config.num_hidden_layers == depth and reloaded.spec.tied is tied
    texts = ["alpha0 beta0 gamma0", "question 3"]
    again = BiEncoder.load(tmp_path / "run" / "model")
    assert (reloaded.encode_texts(texts, "passage", progress=False)
            == again.encode_texts(texts, "passage", progress=False)).all()
    # The trained weights moved away from the start, and the reload holds exactly them.
    torch.manual_seed(4)
    start = BiEncoder.from_spec(EncoderSpec.from_dict(rec["encoder"]))
    assert any(not torch.equal(v, state(start)[k]) for k, v in state(reloaded).items())


def test_random_shape_zero_shot_saves_its_weights(small, tmp_path):
    rec = {"method": "none", "encoder": {"random_init": True, "shape": SHAPE}}
    train(str(small), str(tmp_path / "zs"), rec, seed=9, progress=False)
    loaded = BiEncoder.load(tmp_path / "zs" / "model")
    torch.manual_seed(9)
    expected = BiEncoder.from_spec(EncoderSpec(random_init=True, shape=SHAPE))
    assert_same(state(loaded.query_model), state(expected.query_model))


def test_random_shape_two_processes_train_like_one(tiny_model_dir, small, tmp_path):
    from tests.training.test_train_distributed import run_train

    # The tiny model's config has dropout off (MiniLM's has 0.1, whose masks differ between one and
    # two processes); the shape replaces its size, so both processes must draw the same weights.
    rec = recipe(tiny_model_dir, method="inbatch", batch_size=2, accumulation_steps=1, max_steps=2,
                 pairs=pairs("qrels", "crop"),
                 encoder={"model": str(tiny_model_dir), "random_init": True, "shape": {**SHAPE, "layers": 3},
                          "tied": False, "query_max_length": 16, "passage_max_length": 24})
    two = run_train(small, tmp_path / "p2", rec, processes=2)
    assert two.returncode == 0, two.stderr[-3000:]
    one = run_train(small, tmp_path / "p1", {**rec, "batch_size": 4})
    assert one.returncode == 0, one.stderr[-3000:]
    rows = [[json.loads(x)["loss"] for x in (tmp_path / p / "train_log.jsonl").read_text().splitlines()]
            for p in ("p2", "p1")]
    assert rows[0] == pytest.approx(rows[1], rel=1e-4)
    assert json.loads((tmp_path / "p2" / "train_summary.json").read_text())["encoder"]["hidden_size"] == 32


# ----------------------------------------------------------------------------- config checks
def grid(**run):
    return {"datasets": {"sf": {"source": "local", "path": "x", "test_split": "dev",
                                "dev_split": {"fraction": 0.2, "seed": 0}}},
            "runs": {"r": {"method": "inbatch", **run}}}


@pytest.mark.parametrize("run,message", [
    ({"encoder": {"layers": 7}}, "runs.r.encoder.layers: 7 is more than the 6 layers of 'all-MiniLM-L6-v2'"),
    ({"encoder": {"layers": 0}}, "layers"),
    ({"encoder": {"shape": SHAPE}}, "runs.r.encoder.shape: builds a randomly initialised encoder; set random_init"),
    ({"encoder": {"random_init": True, "shape": {**SHAPE, "hidden": 33}}}, "hidden 33 is not a multiple of heads 2"),
    ({"encoder": {"random_init": True, "shape": {"layers": 2}}}, "runs.r.encoder.shape"),
    ({"encoder": {"random_init": True, "layers": 1, "shape": SHAPE}}, "either layers"),
    ({"pairs": {"sources": ["crop"], "crop": {"min_words": 9, "max_words": 3}}}, "min_words 9 is above max_words 3"),
    ({"pairs": {"sources": ["titles"]}}, "runs.r.pairs.sources"),
    ({"pairs": {"sources": ["qrels", "crop"]}, "hard_negatives": {"per_query": 1}}, "['crop'] pairs have no hard"),
])
def test_bad_regime_keys_fail_config_validation(run, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        pcfg.validate(grid(**run))


def test_good_regime_keys_resolve_and_leave_old_recipes_alone():
    cfg = pcfg.validate(grid(encoder={"layers": 2}, pairs={"sources": ["qrels", "crop"]}))
    rec = pcfg.recipe(cfg, "r", "sf")
    assert rec["encoder"]["layers"] == 2 and rec["pairs"]["crop"] == {"min_words": 10, "max_words": 50}
    plain = pcfg.recipe(pcfg.validate({"datasets": {"sf": {"source": "embedded"}},
                                       "runs": {"r": {"method": "inbatch"}}}), "r", "sf")
    assert "pairs" not in plain and "layers" not in plain["encoder"] and "shape" not in plain["encoder"]
    with pytest.raises(ConfigError, match="datasets.sf.dev_split.name: 'train' is the train split"):
        pcfg.validate({"datasets": {"sf": {"source": "embedded", "dev_split": {"size": 3, "seed": 0,
                                                                                 "name": "train"}}},
                       "runs": {"r": {"method": "inbatch"}}})


def test_dev_split_reaches_the_data_rule(repo_copy):
    import subprocess
    import sys

    cfg = {"datasets": {"sf": {"source": "embedded", "name": "scifact-mini", "test_split": "dev",
                               "dev_split": {"size": 10, "seed": 3}}},
           "runs": {"zs": {"method": "none"}}, "evaluation": {"scorings": ["dot"]}}
    (repo_copy / "config" / "dev.yaml").write_text(json.dumps(cfg))
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--configfile", "config/dev.yaml",
                          "--cores", "1"], cwd=repo_copy, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(repo_copy)})
    assert out.returncode == 0, out.stderr[-3000:]
    assert """--dev-split '{"size":10,"seed":3,"from":"train"}'""" in out.stdout


