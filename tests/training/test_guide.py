"""Guided false-negative filtering (`negative_filter`): the same loss and gradients as
sentence-transformers' GISTEmbedLoss / CachedGISTEmbedLoss on the same batch and guide, bank
columns filtered too, and clear config errors."""

from __future__ import annotations

import copy

import pytest
import torch
import yaml

from conftest import REPO, make_tiny_bert
from pipeline.core import config as pcfg
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.methods import Example, get_method

LENGTH = 16
TAU = 0.05
# Near-duplicates inside the batch, so that a guide has something to filter.
QUERIES = ["what causes rain", "how do plants grow", "why is the sky blue", "what causes heavy rain",
           "how do bees make honey", "why is the sea blue", "how do trees grow", "what is a black hole"]
POSITIVES = ["rain forms when water vapour condenses", "plants grow from light and water",
             "the sky is blue from scattering of light", "heavy rain forms when much water vapour condenses",
             "bees make honey from nectar", "the sea is blue because it reflects the sky",
             "trees grow from light water and soil", "a black hole is collapsed matter"]
NEGATIVES = ["snow is frozen water", "a recipe for bread", "the moon orbits the earth", "stock prices fell",
             "a poem about cats", "blue whales are large", "oak is a hard wood", "stars emit light"]


@pytest.fixture(scope="module")
def guide_dir(tmp_path_factory):
    """A second tiny BERT with other random weights: the guide disagrees with the trained model."""
    return make_tiny_bert(tmp_path_factory.mktemp("guide") / "model", seed=7)


def batch(n=8):
    return [Example(QUERIES[i], POSITIVES[i], [NEGATIVES[i]]) for i in range(n)]


def ours(model_dir, name, negative_filter, **recipe):
    model = BiEncoder.from_spec(EncoderSpec(model=str(model_dir), query_max_length=LENGTH,
                                            passage_max_length=LENGTH)).train()
    method = get_method(name)(model, {"temperature": TAU, "negative_filter": negative_filter, **recipe})
    model.zero_grad(set_to_none=True)
    stats = method.accumulate(batch())
    return stats, {n: p.grad.clone() for n, p in model.query_model.named_parameters() if p.grad is not None}


def theirs(model_dir, guide_dir, loss_cls, **kwargs):
    """sentence-transformers' loss on the same weights, texts and lengths, with the query-query and
    passage-passage columns switched off (this project's InfoNCE has query-passage columns only)."""
    from sentence_transformers import SentenceTransformer

    model, guide = SentenceTransformer(str(model_dir), device="cpu"), SentenceTransformer(str(guide_dir), device="cpu")
    model.max_seq_length = guide.max_seq_length = LENGTH
    loss_fn = loss_cls(model, guide, temperature=TAU, contrast_anchors=False, contrast_positives=False, **kwargs)
    examples = batch()
    features = [model.preprocess([ex.query for ex in examples]), model.preprocess([ex.positive for ex in examples]),
                model.preprocess([ex.negatives[0] for ex in examples])]
    model.zero_grad(set_to_none=True)
    loss = loss_fn(features, None)
    loss.backward()
    transformer = model[0].auto_model if hasattr(model[0], "auto_model") else model[0].model
    return float(loss.detach()), {n: p.grad.clone() for n, p in transformer.named_parameters() if p.grad is not None}


def assert_same(stats, grads, loss, ref):
    assert stats["loss"] == pytest.approx(loss, abs=1e-5)
    assert set(ref) <= set(grads)
    for name, want in ref.items():
        torch.testing.assert_close(grads[name], want, rtol=1e-5, atol=1e-5)


MARGINS = [("absolute", 0.0), ("absolute", 0.02), ("relative", 0.02)]


@pytest.mark.parametrize("margin_type,margin", MARGINS)
def test_inbatch_equals_gist_embed_loss(tiny_model_dir, guide_dir, margin_type, margin):
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

    settings = {"guide": str(guide_dir), "margin": margin, "margin_type": margin_type}
    stats, grads = ours(tiny_model_dir, "inbatch", settings, batch_size=8)
    loss, ref = theirs(tiny_model_dir, guide_dir, GISTEmbedLoss, margin_strategy=margin_type, margin=margin)
    assert_same(stats, grads, loss, ref)
    if margin > 0:  # the case really filters, and not everything
        assert 0 < stats["filtered_per_row"] < 15
        assert stats["effective_negatives_per_row"] == pytest.approx(15 - stats["filtered_per_row"])


@pytest.mark.parametrize("margin_type,margin", MARGINS[1:])
def test_gradcache_equals_cached_gist_embed_loss(tiny_model_dir, guide_dir, margin_type, margin):
    from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss

    settings = {"guide": str(guide_dir), "margin": margin, "margin_type": margin_type}
    # 8 examples in chunks of 3 (the last one short) on both sides.
    stats, grads = ours(tiny_model_dir, "gradcache", settings, batch_size=3, accumulation_steps=3)
    loss, ref = theirs(tiny_model_dir, guide_dir, CachedGISTEmbedLoss, mini_batch_size=3,
                       margin_strategy=margin_type, margin=margin)
    assert_same(stats, grads, loss, ref)
    assert stats["filtered_per_row"] > 0 and stats["guide_seconds"] > 0


def test_self_guide_is_the_training_scores(tiny_model_dir):
    # "self" reuses the training forward's own embeddings: with margin 0 a column is filtered
    # exactly when the model already scores it above the row's positive.
    model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), query_max_length=LENGTH,
                                            passage_max_length=LENGTH)).train()
    method = get_method("inbatch")(model, {"batch_size": 8, "temperature": TAU, "negative_filter": {"guide": "self"}})
    q, p, h = method.embed(batch())
    _, stats = method.batch_loss(q, p, h, batch())
    scores = q @ torch.cat([p, h]).T
    above = (scores > scores.diagonal().unsqueeze(1)).sum() / 8
    assert stats["filtered_per_row"] == pytest.approx(float(above))


def test_a_banked_near_duplicate_of_the_positive_is_filtered(tiny_model_dir):
    """ContAccum: micro-batch 1 banks a paraphrase of micro-batch 2's positive (under another id, so
    the id mask cannot see it); the MiniLM guide removes that bank column from the row, and only it."""
    model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), query_max_length=32,
                                            passage_max_length=32)).train()
    settings = {"guide": "all-MiniLM-L6-v2", "margin": 0.1, "margin_type": "absolute"}
    method = get_method("contaccum")(model, {"batch_size": 2, "accumulation_steps": 2, "memory_size": 8,
                                             "temperature": TAU, "negative_filter": settings})
    first = [Example("how do vaccines work", "Vaccines train the immune system to recognise a pathogen.", [],
                     query_id="a", positive_id="da"),
             Example("what do mitochondria do", "Mitochondria are the powerhouse of the cell, making ATP.", [],
                     query_id="b", positive_id="db")]
    second = [Example("which organelle produces energy in cells", "The mitochondrion is the cell's powerhouse and "
                      "produces ATP.", [], query_id="c", positive_id="dc"),
              Example("when did the roman empire fall", "The western Roman Empire fell in 476 AD.", [],
                      query_id="d", positive_id="dd")]
    stats = method.accumulate(first + second)
    assert [len(method.guide_banks[s]) for s in "qp"] == [4, 4] and method.guide_banks["p"].ids == ["da", "db", "dc", "dd"]
    # Score micro-batch 2 again against the bank as it stood (micro-batch 1 only).
    for side in "qp":
        for bank in (method.guide_banks[side], getattr(method, f"bank_{side}")):
            bank.rows, bank.ids, bank.born = bank.rows[:2], bank.ids[:2], bank.born[:2]
    q, p, h = method.embed(second)
    guide = method.guide_embeddings(q, p, h, second)
    rows, columns = method._banked_guide(guide)
    drop = method.guide.mask(rows, columns)
    # Rows: c, d, banked a, banked b. Columns: dc, dd, banked da, banked db.
    assert drop[0].tolist() == [False, False, False, True]  # c's positive's paraphrase, db, leaves its softmax
    assert drop[1].sum() == 0 and drop[2].sum() == 0
    assert drop[3].tolist() == [True, False, False, False]  # and b's row drops dc, the same paraphrase
    assert stats["filtered_per_row"] > 0


def test_guide_banks_are_checkpointed(tiny_model_dir, guide_dir):
    def build():
        model = BiEncoder.from_spec(EncoderSpec(model=str(tiny_model_dir), query_max_length=LENGTH,
                                                passage_max_length=LENGTH)).train()
        return get_method("contaccum")(model, {"batch_size": 2, "accumulation_steps": 2, "memory_size": 4,
                                               "bank_update": "step", "negative_filter": {"guide": str(guide_dir)}})

    method = build()
    method.accumulate(batch(4))
    state = method.state_dict()
    assert {"guide_bank_q", "guide_bank_p", "guide_bank_h"} <= set(state) and len(state["pending"]) == 2
    restored = build()
    restored.load_state_dict(copy.deepcopy(state))
    method.after_optimizer_step()
    restored.after_optimizer_step()
    for side in "qph":
        torch.testing.assert_close(restored.guide_banks[side].rows, method.guide_banks[side].rows)
        assert restored.guide_banks[side].ids == method.guide_banks[side].ids
    assert len(restored.guide_banks["p"]) == 4


# ----------------------------------------------------------------------------- config errors
BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def with_filter(section):
    cfg = copy.deepcopy(BASE)
    run = next(iter(r for r, v in cfg["runs"].items() if v.get("method") != "none"))
    cfg["runs"][run]["negative_filter"] = section
    return cfg, run


@pytest.mark.parametrize("section,message", [
    ({"guide": "self", "margins": 0.1}, "negative_filter: unknown key(s) ['margins']"),
    ({"guide": "/no/such/guide"}, "negative_filter.guide: '/no/such/guide' is not 'self' and no such model folder"),
    ({"guide": str(REPO / "config")}, f"negative_filter.guide: {REPO / 'config'} holds neither a trained model"),
    ({"guide": "self", "margin_type": "percent"}, "negative_filter.margin_type"),
    ({"guide": "self", "margin": 3.0}, "negative_filter.margin"),
    ({"guide": "self", "margin": 1.5, "margin_type": "relative"}, "negative_filter.margin (relative): expected a number in [-1, 1]"),
    ({"margin": 0.1}, "negative_filter"),
])
def test_bad_negative_filter_is_a_config_error(section, message):
    cfg, run = with_filter(section)
    with pytest.raises(pcfg.ConfigError) as err:
        pcfg.validate(cfg)
    assert f"runs.{run}." in str(err.value) and message in str(err.value)


def test_good_negative_filter_validates(tiny_model_dir):
    for section in ({"guide": "self"}, {"guide": str(tiny_model_dir), "margin": 0.05, "margin_type": "relative"},
                    {"guide": "all-MiniLM-L6-v2", "margin": -0.1}):
        cfg, run = with_filter(section)
        assert pcfg.recipe(pcfg.validate(cfg), run)["negative_filter"]["guide"] == section["guide"]


# ----------------------------------------------------------------------------- the training loop
def test_training_reports_the_guide_cost_and_filtered_columns(tiny_model_dir, guide_dir, tmp_path):
    import json

    from pipeline.core.config import TRAINING_DEFAULTS
    from pipeline.results.diagnostics import run_diagnostics
    from pipeline.sources.prepare import main as data_main
    from pipeline.training.train import train

    data = tmp_path / "scifact-mini"
    data_main(["--name", "scifact-mini", "--source", "embedded", "--out", str(data), "--no-progress"])
    recipe = {**TRAINING_DEFAULTS, "method": "contaccum", "batch_size": 4, "accumulation_steps": 2,
              "memory_size": 8, "max_steps": 3, "train_split": "train",
              "negative_filter": {"guide": str(guide_dir), "margin": 0.02},
              "encoder": {"model": str(tiny_model_dir), "query_max_length": 16, "passage_max_length": 32}}
    summary = train(str(data), str(tmp_path / "run"), recipe, seed=1, progress=False)
    assert summary["negative_filter"] == {"guide": str(guide_dir), "margin": 0.02, "margin_type": "absolute"}
    assert 0 < summary["guide_seconds"] < summary["seconds"] and 0 < summary["guide_share"] < 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert all("filtered_per_row" in r and r["guide_seconds"] > 0 for r in rows)
    assert summary["filtered_per_row"] > 0
    assert run_diagnostics(rows)["guide-filtered / row"] == pytest.approx(summary["filtered_per_row"])


# ----------------------------------------------------------------------------- several processes
def test_two_processes_filter_like_one(tiny_model_dir, guide_dir, tmp_path):
    """P = 2 (each process guide-encodes its slice, the rows are gathered) filters the same columns
    and gives the same gradients as P = 1 with twice the micro-batch: in-batch, hard-negative,
    gathered and bank columns."""
    from tests.training.test_distributed import rel_err, run_worker

    guide = {"guide": str(guide_dir), "margin": 0.02}
    cases = [
        {"name": "guide-gradcache-hn", "method": "gradcache", "negatives": 1, "ids": True, "updates": 1,
         "recipe": {"batch_size": 2, "accumulation_steps": 2, "negative_filter": guide}},
        {"name": "guide-contaccum-hn", "method": "contaccum", "negatives": 1, "ids": True, "updates": 2,
         "recipe": {"batch_size": 2, "accumulation_steps": 2, "memory_size": 6, "hard_negatives": {"per_query": 1},
                    "negative_filter": guide}},
        {"name": "self-gradaccum", "method": "gradaccum", "updates": 1,
         "recipe": {"batch_size": 2, "accumulation_steps": 2, "negative_filter": {"guide": "self", "margin": 0.02}}},
    ]
    two = run_worker(tiny_model_dir, tmp_path, 2, cases)
    one = run_worker(tiny_model_dir, tmp_path, 1, [{**c, "recipe": {**c["recipe"], "batch_size": 4}} for c in cases])
    for case in cases:
        a, b = one[case["name"]], two[case["name"]]
        assert [s["filtered_per_row"] for s in b["stats"]] == pytest.approx([s["filtered_per_row"] for s in a["stats"]])
        assert sum(s["filtered_per_row"] for s in a["stats"]) > 0, case["name"]  # the case really filters
        for g1, g2 in zip(a["grads"], b["grads"]):
            assert rel_err(g2, g1) <= 1e-5, case["name"]
