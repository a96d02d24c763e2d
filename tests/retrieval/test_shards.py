"""Sharded corpus encoding (index.shard_size): the shard plan, streamed .npy files, and the entry
points giving the same embeddings, ids and metrics as the unsharded index step."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.evaluation import evaluate as ev
from pipeline.retrieval import index as idx
from pipeline.retrieval import shards
from pipeline.core.common import PipelineError
from pipeline.core.index_params import resolve_params
from tiny_beir import make_tiny_beir, make_zero_shot_model


def test_plan_covers_every_row_once():
    assert shards.make_plan(10, 4) == [[0, 4], [4, 8], [8, 10]]
    assert shards.make_plan(8, 4) == [[0, 4], [4, 8]]
    assert shards.make_plan(3, 100) == [[0, 3]]
    with pytest.raises(PipelineError, match="empty"):
        shards.make_plan(0, 4)


def test_fixed_count_plan_is_near_equal_and_covers_every_row():
    from pipeline.retrieval.shards import make_plan_count

    for n, k in ((1000, 4), (5183, 4), (7, 3), (2, 5)):
        plan = make_plan_count(n, k)
        assert len(plan) == k and plan[0][0] == 0 and plan[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))
        assert max(e - s for s, e in plan) - min(e - s for s, e in plan) <= 1
    with pytest.raises(PipelineError, match="shard_size and shards"):
        resolve_params({"shard_size": 10, "shards": 2})


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_npy_stream_roundtrip(tmp_path, dtype):
    x = np.random.default_rng(0).normal(size=(1000, 16)).astype(np.float32)
    path = tmp_path / "e.npy"
    shards.write_npy_stream(path, x.shape, dtype, (x[i:i + 300] for i in range(0, 1000, 300)))
    loaded = np.load(path, mmap_mode="r")
    assert loaded.dtype == np.dtype(dtype) and loaded.shape == x.shape
    np.testing.assert_array_equal(loaded, x.astype(dtype))
    np.testing.assert_array_equal(shards.read_rows(path, 250, 700), x.astype(dtype)[250:700].astype(np.float32))
    blocks = list(shards.iter_rows(path, chunk=333))
    assert [s for s, _ in blocks] == [0, 333, 666, 999]
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), x.astype(dtype).astype(np.float32))
    with pytest.raises(PipelineError, match="expected 1000"):
        shards.write_npy_stream(tmp_path / "short.npy", x.shape, dtype, [x[:10]])
    assert not (tmp_path / "short.npy").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("shards")
    ds = make_tiny_beir(root / "data")
    model = make_zero_shot_model(tiny_model_dir, root / "model")
    return {"root": root, "ds": ds, "model": model}


def _manifest(ds):
    if not (ds / "manifest.json").is_file():
        n = sum(1 for line in open(ds / "corpus.jsonl") if line.strip())
        (ds / "manifest.json").write_text(json.dumps({"counts": {"docs": n}}))


def _sharded_index(t, name, shard_size, params):
    root, ds, model = t["root"], t["ds"], t["model"]
    _manifest(ds)
    plan = root / f"{name}-plan.json"
    shards.main(["plan", "--dataset", str(ds), "--shard-size", str(shard_size), "--out", str(plan)])
    folder = root / f"{name}-shards"
    for i in range(shards.num_shards(plan)):
        shards.main(["encode", "--model", str(model), "--dataset", str(ds), "--plan", str(plan), "--shard", str(i),
                     "--out-embeddings", str(folder / f"{i}.npy"), "--out-ids", str(folder / f"{i}.json"),
                     "--params-json", json.dumps(params)])
    out = root / f"{name}-index"
    idx.main(["--model", str(model), "--dataset", str(ds), "--out", str(out), "--params-json", json.dumps(params),
              "--shards", str(folder), "--plan", str(plan)])
    return out, plan, folder


def test_sharded_index_and_metrics_equal_unsharded(tiny):
    params = {"batch_size": 8, "index_types": ["flat", "hnsw"]}
    plain = tiny["root"] / "plain-index"
    idx.main(["--model", str(tiny["model"]), "--dataset", str(tiny["ds"]), "--out", str(plain),
              "--params-json", json.dumps(params)])
    sharded, plan, folder = _sharded_index(tiny, "four", 11, params)
    assert shards.num_shards(plan) == 4  # 40 docs: 11 + 11 + 11 + 7
    assert json.loads((sharded / "docids.json").read_text()) == json.loads((plain / "docids.json").read_text())
    a, b = np.load(plain / "embeddings.npy"), np.load(sharded / "embeddings.npy")
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    stats = json.loads((sharded / "index_stats.json").read_text())
    assert stats["shards"] == 4 and stats["num_docs"] == 40 and stats["indexes"]["flat"]["params"]["storage"]
    assert {p.name for p in sharded.iterdir()} == {"embeddings.npy", "docids.json", "index_stats.json", "hnsw.faiss"}
    eval_params = {"scorings": ["dot", "dn"], "top_k": 100, "lambdas": [0.25]}
    outs = []
    for name, index in (("plain", plain), ("sharded", sharded)):
        out = tiny["root"] / f"eval-{name}"
        ev.main(["--model", str(tiny["model"]), "--dataset", str(tiny["ds"]), "--index", str(index),
                 "--out", str(out), "--params-json", json.dumps(eval_params)])
        outs.append(out)
    if np.array_equal(a, b):  # bit-identical embeddings: every output byte-identical
        for name in ("metrics.json", "per_query.json", "run-dot.trec", "run-dn-0.25.trec"):
            assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    else:
        for name in ("run-dot.trec", "run-dn-0.25.trec"):
            ranks = [[line.split()[:4] for line in (o / name).read_text().splitlines()] for o in outs]
            assert ranks[0] == ranks[1], name
    rec = json.loads((outs[1] / "index_report.json").read_text())["index_recall"]
    assert rec["flat"]["recall@100_vs_flat"] == 1.0 and rec["hnsw"]["recall@100_vs_flat"] == 1.0


def test_float16_storage(tiny):
    params = {"batch_size": 8, "dtype": "float16"}
    sharded, _, folder = _sharded_index(tiny, "half", 16, params)
    emb = np.load(sharded / "embeddings.npy", mmap_mode="r")
    assert emb.dtype == np.float16 and np.load(folder / "0.npy").dtype == np.float16
    assert json.loads((sharded / "index_stats.json").read_text())["dtype"] == "float16"
    out = tiny["root"] / "eval-half"
    result = ev.main(["--model", str(tiny["model"]), "--dataset", str(tiny["ds"]), "--index", str(sharded),
                      "--out", str(out), "--params-json", json.dumps({"scorings": ["dot", "dn"]})])
    assert 0 <= result["rows"][0]["ndcg@10"] <= 1


def test_gather_refuses_a_missing_or_stale_shard(tiny, tmp_path):
    params = {"batch_size": 8}
    _, plan, folder = _sharded_index(tiny, "stale", 20, params)
    (folder / "1.json").rename(tmp_path / "1.json")
    with pytest.raises(PipelineError, match="shard 1 is missing"):
        idx.run_gather(str(tiny["ds"]), str(folder), str(plan), str(tmp_path / "o"), params)
    (tmp_path / "1.json").rename(folder / "1.json")
    other = tmp_path / "plan.json"
    shards.write_plan(tiny["ds"], other, shard_size=25)
    with pytest.raises(PipelineError, match="shard 0 holds rows \\[0, 20\\).*\\[0, 25\\)"):
        idx.run_gather(str(tiny["ds"]), str(folder), str(other), str(tmp_path / "o"), params)
    assert not (tmp_path / "o").exists()
