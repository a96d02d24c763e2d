"""The interface every scoring implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np

from ..dn import DNMeans


@dataclass
class ScoringInputs:
    """What a scoring may look at. Before encoding (`Scoring.prepare`) only the dataset, the
    evaluated query ids, the number of indexed documents and the step parameters are set;
    `queries`, `docs` and `encode` are filled in before `Scoring.means` is called."""

    dataset: Any
    query_ids: list[str]
    num_docs: int
    params: Any                                   # pipeline.params.EvalParams
    queries: np.ndarray | None = None             # evaluated query embeddings, row i = query_ids[i]
    docs: np.ndarray | None = None                # corpus embeddings (memory-mapped), index row order
    encode: Callable[[list[str]], np.ndarray] | None = None   # encode more query texts
    extra: dict = field(default_factory=dict)


class Scoring:
    """One way to score a query against the indexed documents, expressed as DN's shift:

        S(q, d) = (q - lam * mu_q) . (d - lam * mu_d)

    `means` returns one (mu_q, mu_d) pair per repeat (None for the plain dot product), and the
    evaluate step searches the unchanged inner-product index with the shifted queries (see
    pipeline.dn). A scoring with several repeats (`sampled`) reports the mean and sample std
    of each metric over them.
    """

    family: ClassVar[str] = ""
    uses_lambda: ClassVar[bool] = False
    sampled: ClassVar[bool] = False
    caption: ClassVar[str] = ""
    label: ClassVar[str] = ""  # how tables title it; the family name when empty
    order: ClassVar[int] = 100  # position in tables and plots (dot 0, dn 10, dn* 20)

    def __init__(self, lam: float | None = None):
        if self.uses_lambda and lam is None:
            raise ValueError(f"scoring {self.family!r} needs a lambda")
        self.lam = float(lam) if self.uses_lambda else None

    # ------------------------------------------------------------------ names
    @property
    def name(self) -> str:
        return self.family if self.lam is None else f"{self.family}@{self.lam:g}"

    @property
    def slug(self) -> str:
        return self.name.replace("*", "star").replace("@", "-")

    @property
    def search_lambda(self) -> float:
        """The lambda passed to the DN search (1 for a shift that takes no lambda)."""
        return self.lam if self.lam is not None else 1.0

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # ------------------------------------------------------------------ behaviour
    @classmethod
    def check(cls, params) -> None:
        """Fail with a PipelineError naming the parameter when `params` cannot be scored this way."""

    def prepare(self, inputs: ScoringInputs) -> None:
        """Work that must happen before any encoding (cheap checks, sample draws)."""

    def means(self, inputs: ScoringInputs) -> list[DNMeans | None]:
        return [None]
