"""The interface every scoring implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from pipeline.evaluation.distribution_normalization import DNMeans, dn_search


@dataclass
class ScoringInputs:
    """What a scoring may look at. Before encoding (`Scoring.prepare`) only the dataset, the
    evaluated query ids, the number of indexed documents and the step parameters are set;
    `queries`, `docs` and `encode` are filled in before `Scoring.means` is called."""

    dataset: Any
    query_ids: list[str]
    num_docs: int
    params: Any                                   # pipeline.core.eval_params.EvalParams
    queries: np.ndarray | None = None             # evaluated query embeddings, row i = query_ids[i]
    docs: np.ndarray | None = None                # corpus embeddings (memory-mapped), index row order
    encode: Callable[[list[str]], np.ndarray] | None = None   # encode more query texts
    extra: dict = field(default_factory=dict)


class Scoring:
    """One way to score a query against the indexed documents. By default it is DN's shift:

        S(q, d) = (q - lam * mu_q) . (d - lam * mu_d)

    `means` returns one (mu_q, mu_d) pair per repeat (None for the plain dot product), and
    `rankings` searches the unchanged inner-product index with the shifted queries (see
    pipeline.evaluation.distribution_normalization). A scoring that is not a shift (NNN, QB-Norm) overrides `rankings` instead.
    A scoring with several repeats (`sampled`) reports the mean and sample std of each metric
    over them.

    A result is named by its family, its fixed `setting` (e.g. NNN's "k=16"; tables show
    `family[setting]` in their `scoring` column) and its swept parameter `lam` (the tables'
    `lambda` column: DN's lambda, NNN's alpha; 0 is the plain dot product for both).
    """

    family: ClassVar[str] = ""
    uses_lambda: ClassVar[bool] = False
    sampled: ClassVar[bool] = False
    caption: ClassVar[str] = ""
    label: ClassVar[str] = ""  # how tables title it; the family name when empty
    order: ClassVar[int] = 100  # position in tables and plots (dot 0, dn 10, dn* 20)
    parameter: ClassVar[str] = "λ"  # what the `lambda` column holds for this scoring
    # Draws its means from `EvalParams.dn_star` (unlabeled queries of dn_star.source_split), so
    # the config check keeps that split apart from the test splits and metrics.json records it.
    uses_dn_star: ClassVar[bool] = False
    marker: ClassVar[tuple[str, str]] = ("D", "-.")  # the weight plot's (marker, line style)
    offset: ClassVar[float] = 0.0  # extra sideways shift in the weight plot, in bar widths

    def __init__(self, lam: float | None = None, setting: str = ""):
        if self.uses_lambda and lam is None:
            raise ValueError(f"scoring {self.family!r} needs a lambda")
        self.lam = float(lam) if self.uses_lambda else None
        self.setting = setting

    # ------------------------------------------------------------------ names
    @property
    def column(self) -> str:
        """The tables' `scoring` value: the family, with the fixed setting in brackets."""
        return f"{self.family}[{self.setting}]" if self.setting else self.family

    @property
    def name(self) -> str:
        return self.column if self.lam is None else f"{self.column}@{self.lam:g}"

    @property
    def parameters(self) -> str:
        """The result's parameters as table text: `λ=0.25`, `k=16 α=0.5`, `beta=0.05`, `` for dot."""
        swept = "" if self.lam is None else f"{self.parameter}={self.lam:g}"
        return " ".join(x for x in (self.setting, swept) if x)

    @property
    def slug(self) -> str:
        slug = self.name.replace("*", "star").replace("@", "-").replace("[", "-").replace("]", "")
        return slug.replace("=", "").replace(",", "-")

    @property
    def search_lambda(self) -> float:
        """The lambda passed to the DN search (1 for a shift that takes no lambda)."""
        return self.lam if self.lam is not None else 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ------------------------------------------------------------------ variants
    @classmethod
    def variants(cls, params) -> list["Scoring"]:
        """The results the evaluate step's parameters ask for: one per lambda for a lambda scoring."""
        return [cls(lam) for lam in params.lambdas] if cls.uses_lambda else [cls()]

    @classmethod
    def from_setting(cls, setting: str, lam: float | None) -> "Scoring":
        """The result behind a table row: its bracketed setting and its `lambda` value."""
        return cls(lam)

    @classmethod
    def headline_lambda(cls, evaluation: dict | None, lam: float | None) -> float | None:
        """The `lambda` value the headline table shows (DN's first lambda by default)."""
        return lam

    # ------------------------------------------------------------------ behaviour
    @classmethod
    def check(cls, params) -> None:
        """Fail with a PipelineError naming the parameter when `params` cannot be scored this way."""

    def prepare(self, inputs: ScoringInputs) -> None:
        """Work that must happen before any encoding (cheap checks, sample draws)."""

    def means(self, inputs: ScoringInputs) -> list[DNMeans | None]:
        return [None]

    def rankings(self, index, inputs: ScoringInputs, top_k: int):
        """(scores, rows) per repeat: float64 scores and int64 document rows, best first, ties to
        the lower row, -1 where an approximate index found fewer than top_k."""
        for means in self.means(inputs):
            yield dn_search(index, inputs.queries, top_k, means, self.search_lambda, inputs.params.dn_order,
                            doc_emb=inputs.docs)

    def details(self, inputs: ScoringInputs) -> dict | None:
        """Facts metrics.json records about this result (e.g. the reference bank), or None."""
        return None
