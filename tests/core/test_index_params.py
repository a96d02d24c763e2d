"""pipeline.core.index_params: the index section's defaults, its checks naming the key, FAISS
factory strings accepted when FAISS parses them, and IVF sized from the corpus."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from pipeline.core import index_params as I
from pipeline.core.common import PipelineError


def test_bad_params_name_the_key():
    with pytest.raises(PipelineError, match=r"index_types.*'annoy'.*flat.*hnsw.*ivf"):
        I.resolve_params({"index_types": ["flat", "annoy"]})
    with pytest.raises(PipelineError, match="ivf.nlist"):
        I.resolve_params({"ivf": {"nlist": 50}}, num_docs=10)
    with pytest.raises(PipelineError, match=r"hnsw.*efsearch"):
        I.resolve_params({"hnsw": {"efsearch": 10}})
    with pytest.raises(PipelineError, match="batch_size"):
        I.resolve_params({"batch_size": 0})
    with pytest.raises(PipelineError, match=r"precision.*fp32.*fp16.*bf16"):
        I.resolve_params({"precision": "int8"})
    assert I.resolve_params({}).precision == "fp32"


def test_bad_shard_params():
    with pytest.raises(PipelineError, match="shard_size"):
        I.resolve_params({"shard_size": 0})
    with pytest.raises(PipelineError, match="dtype.*float8"):
        I.resolve_params({"dtype": "float8"})
    with pytest.raises(PipelineError, match="shard_size and shards: set one"):
        I.resolve_params({"shard_size": 10, "shards": 2})


def test_factory_strings_are_checked_by_faiss():
    assert I.check_index_types("HNSW32,SQ8") == ["HNSW32,SQ8"]
    assert I.check_index_types(["flat", "IVF256,PQ16", "flat"]) == ["flat", "IVF256,PQ16"]
    with pytest.raises(PipelineError, match=r"index_types: unknown index type 'IVF,PQ'.*\(FAISS: "):
        I.check_index_types(["IVF,PQ"])
    with pytest.raises(PipelineError, match=r"search_index: unknown index type 3;.*\(not a string\)"):
        I.check_index_type(3, "search_index")
    with pytest.raises(PipelineError, match="index_types: expected a non-empty list"):
        I.check_index_types([])


def test_ivf_is_sized_from_the_corpus_unless_set():
    assert [I.default_nlist(n) for n in (1, 3, 100, 5183)] == [1, 3, 40, 288]
    ivf = I.resolve_params({}, num_docs=5183).ivf
    assert (ivf.nlist, ivf.nprobe, ivf.seed) == (288, 72, 0)
    assert I.resolve_params({}).ivf.nlist is None  # unknown corpus: left to the index step
    assert I.resolve_params({"ivf": {"nlist": 8, "nprobe": 50}}, num_docs=100).ivf.nprobe == 8
    hnsw = I.resolve_params({"hnsw": {"efSearch": 64}}).hnsw
    assert (hnsw.M, hnsw.efConstruction, hnsw.efSearch) == (32, 200, 64)


def test_index_job_leaves_optional_keys_out_at_their_defaults():
    section = asdict(I.resolve_params({}))  # the config's filled `index:` section
    job = I.index_job_params(section)
    assert not set(I.INDEX_OPTIONAL) & set(job) and job["index_types"] == ["flat"]
    assert I.index_job_params({**section, "dtype": "float16", "shards": 4})["dtype"] == "float16"
    assert I.index_job_params({**section, "shards": 4})["shards"] == 4
