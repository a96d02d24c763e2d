"""The evaluate step's parameters (scorings, DN/DN*, NNN, QB-Norm, the query bank) and the config's
`evaluation:` section, with every default; no torch or FAISS at import."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.params import defaults


@dataclass
class DNStarParams:
    samples: int = 100          # queries and documents drawn for each mean
    repeats: int = 5            # independent draws; the row reports their mean and std
    source_split: str = "train"  # unlabeled queries come from this split, never the evaluated one
    seed: int = 0


DEFAULT_LAMBDA = 0.25  # the official DN code's lambda (theory gives 0.5)


@dataclass
class QueryBankParams:
    """The reference queries of NNN and QB-Norm (docs/methods.md#query-bank-normalisations)."""

    split: str | None = None  # None: the dataset's train_split (the step itself falls back to "train")
    size: int | None = None   # None: every query of the split; N: N of them drawn with `seed`
    seed: int = 0
    candidates: int = 1000    # non-flat search index: rescore this many dot-product candidates per query


@dataclass
class NNNParams:
    k: list = field(default_factory=lambda: [16])       # reference neighbours per document ("all": the bank)
    alpha: list = field(default_factory=lambda: [0.5])  # weight of the correction, in [0, 1]


@dataclass
class QBNormParams:
    beta: list = field(default_factory=lambda: [0.05])  # inverted-softmax temperature, > 0


@dataclass
class EvalParams:
    """The evaluate step's parameters for one job."""

    split: str = "test"
    protocol: str = "qrels"
    scorings: list = field(default_factory=lambda: ["dot", "dn", "dn*"])
    lambdas: list = field(default_factory=lambda: [DEFAULT_LAMBDA])
    dn_order: str = "normalize_then_shift"
    dn_star: DNStarParams = field(default_factory=DNStarParams)
    nnn: NNNParams = field(default_factory=NNNParams)
    qbnorm: QBNormParams = field(default_factory=QBNormParams)
    query_bank: QueryBankParams = field(default_factory=QueryBankParams)
    index: str = "flat"
    top_k: int = 100
    approx_indexes: list | None = None  # None: every non-flat index that was built
    seed: int = 0
    batch_size: int = 64


@dataclass
class EvaluationSection:
    """The config's `evaluation:` section (the shared keys default as in EvalParams)."""

    scorings: list = field(default_factory=lambda: defaults(EvalParams)["scorings"])
    lambdas: list = field(default_factory=lambda: defaults(EvalParams)["lambdas"])
    dn_order: str = EvalParams.dn_order
    dn_star: dict = field(default_factory=lambda: {k: v for k, v in defaults(DNStarParams).items() if k != "seed"})
    nnn: dict = field(default_factory=lambda: defaults(NNNParams))
    qbnorm: dict = field(default_factory=lambda: defaults(QBNormParams))
    query_bank: dict = field(default_factory=lambda: defaults(QueryBankParams))
    top_k: int = EvalParams.top_k
    search_index: str = EvalParams.index
    reference_run: str | None = None
    compare: dict = field(default_factory=dict)  # run -> its own reference run (overrides reference_run)
    significance_permutations: int = 10000
