"""Index types and the index step's parameters, checked without FAISS loaded at import: config
validation (pipeline.core.config) and the index, shards and evaluate steps share them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from pipeline.core.common import PipelineError
from pipeline.core.params import PRECISIONS, check_choice, check_int, check_keys, defaults, merged


@dataclass
class HNSWParams:
    # Measured on full SciFact (5,183 MiniLM vectors, 300 test queries, recall@100 vs flat):
    # M=32/efConstruction=200 reaches 0.956 / 0.991 / 0.999 / 0.9998 at efSearch 64 / 128 / 256 /
    # 512, so 256 clears 0.99 with margin at ~0.4 ms per query on 2 cores.
    M: int = 32
    efConstruction: int = 200
    efSearch: int = 256


@dataclass
class IVFParams:
    nlist: int | None = None   # None: ~4*sqrt(N)
    nprobe: int | None = None  # None: nlist / 4
    seed: int = 0


@dataclass
class IndexParams:
    """The `index:` section and the index step's parameters. `index_types` are the short
    aliases flat / hnsw / ivf or any FAISS index_factory string (e.g. "IVF256,PQ16", "HNSW32,SQ8")."""

    batch_size: int = 64
    index_types: list = field(default_factory=lambda: ["flat"])
    precision: str = "fp32"  # corpus-encoding autocast on CUDA (fp16/bf16); fp32 on the CPU
    hnsw: HNSWParams = field(default_factory=HNSWParams)
    ivf: IVFParams = field(default_factory=IVFParams)
    # None: one index job encodes the whole corpus.
    # N: the corpus is split into consecutive blocks of N passages, each encoded by its own
    # `encode_shard` job, and the `index` job gathers them (pipeline.retrieval.shards).
    shard_size: int | None = None
    # Or a fixed number of near-equal shards per corpus: the shard jobs are then known before any
    # data exists, so a dry run (and a cluster's scheduler) sees the whole grid. Exclusive with
    # shard_size.
    shards: int | None = None
    # Storage type of embeddings.npy (and of the shards): float16 halves disk and page-cache
    # memory; search and DN still compute in float32/float64.
    dtype: str = "float32"
    # Rows sampled (seed ivf.seed) to train IVF/PQ/SQ quantisers when building from shards.
    train_size: int = 262144

    def for_corpus(self, num_docs: int) -> IndexParams:
        """These parameters with IVF sized for a corpus of `num_docs`: nlist ~4*sqrt(N) unless
        given (never more lists than documents), nprobe a quarter of the lists unless given."""
        nlist = self.ivf.nlist if self.ivf.nlist is not None else default_nlist(num_docs)
        if nlist > num_docs:
            raise PipelineError(f"ivf.nlist: {nlist} lists need at least as many documents; "
                                f"the corpus has {num_docs}")
        # A quarter of the lists: recall@100 0.956 on SciFact (nlist 288) while still pruning 3/4
        # of the corpus; nprobe = nlist/2 gives 0.994 for callers who want near-exact IVF.
        nprobe = self.ivf.nprobe if self.ivf.nprobe is not None else max(1, nlist // 4)
        return replace(self, ivf=replace(self.ivf, nlist=nlist, nprobe=min(nprobe, nlist)))


# Keys of the index section that only matter when set (sharding, storage type, quantiser
# training rows): left out of the index job's JSON at their defaults, so that a job's parameters,
# and Snakemake's rerun decision, change only when one of them is set.
INDEX_OPTIONAL = ("shard_size", "shards", "dtype", "train_size")


def index_job_params(index: dict) -> dict:
    """The config's `index:` section as the index job's parameter: INDEX_OPTIONAL keys at their
    default left out."""
    default = defaults(IndexParams)
    return {k: v for k, v in index.items() if k not in INDEX_OPTIONAL or v != default[k]}


ALIASES = ("flat", "hnsw", "ivf")  # short names with tuned parameters; anything else is a factory string
# Dimension used only to check that a factory string parses: divisible by every usual PQ/SQ split.
_PROBE_DIM = 3840


def check_index_types(types: Any, key: str = "index_types") -> list[str]:
    if isinstance(types, str):
        types = [types]
    if not isinstance(types, list) or not types:
        raise PipelineError(f"{key}: expected a non-empty list of index types ({list(ALIASES)} or FAISS "
                            "index_factory strings)")
    for kind in types:
        check_index_type(kind, key)
    return list(dict.fromkeys(types))


def check_index_type(kind: Any, key: str) -> str:
    if kind in ALIASES:
        return kind
    problem = "not a string"
    if isinstance(kind, str) and kind:
        import faiss

        try:
            faiss.index_factory(_PROBE_DIM, kind, faiss.METRIC_INNER_PRODUCT)
            return kind
        except RuntimeError as exc:
            problem = "FAISS: " + str(exc).strip().splitlines()[-1].split(": ")[-1][:200]
    raise PipelineError(f"{key}: unknown index type {kind!r}; allowed: the aliases {list(ALIASES)} or a FAISS "
                        f"index_factory string such as 'IVF256,PQ16' or 'HNSW32,SQ8' ({problem})")


def default_nlist(num_docs: int) -> int:
    # ~4*sqrt(N) is FAISS's usual starting point; never more lists than points to train on.
    return max(1, min(num_docs, int(round(4 * math.sqrt(num_docs)))))


def resolve_params(params: dict, num_docs: int | None = None) -> IndexParams:
    """Validate the step's JSON parameters (every key named on error) and fill the defaults, once at
    the step's entry; `num_docs` (when known) sizes IVF, as `IndexParams.for_corpus` does later."""
    check_keys(params, defaults(IndexParams), "params")
    given = merged(IndexParams, params)
    hnsw = HNSWParams(**check_keys(given.pop("hnsw"), defaults(HNSWParams), "hnsw"))
    ivf = IVFParams(**check_keys(given.pop("ivf"), defaults(IVFParams), "ivf"))
    p = IndexParams(**given, hnsw=hnsw, ivf=ivf)
    check_int(p.batch_size, "batch_size")
    for key in ("shard_size", "shards"):
        if getattr(p, key) is not None:
            check_int(getattr(p, key), key)
    if p.shard_size is not None and p.shards is not None:
        raise PipelineError("shard_size and shards: set one (passages per shard, or the number of shards), not both")
    if p.dtype not in ("float32", "float16"):
        raise PipelineError(f"dtype: unknown embedding storage type {p.dtype!r}; allowed: ['float32', 'float16']")
    check_int(p.train_size, "train_size")
    p.index_types = check_index_types(p.index_types)
    # Every precision is a CUDA autocast dtype; on the CPU each computes in fp32 (accepted so one
    # config runs anywhere). Embeddings are always stored as float32.
    check_choice(p.precision, "precision", PRECISIONS)
    for key, value in asdict(hnsw).items():
        check_int(value, f"hnsw.{key}")
    for key in ("nlist", "nprobe"):
        if getattr(ivf, key) is not None:  # None: "use the default"
            check_int(getattr(ivf, key), f"ivf.{key}")
    check_int(ivf.seed, "ivf.seed", minimum=0)
    return p if num_docs is None else p.for_corpus(num_docs)


def as_index_params(params: dict | IndexParams) -> IndexParams:
    """A step's parameters as IndexParams: a JSON object from the command line is resolved here,
    at the step's entry, and the instance passed on."""
    return params if isinstance(params, IndexParams) else resolve_params(params)
