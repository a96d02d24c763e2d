"""Distribution Normalization (DN) and its few-sample variant DN*.

Zhou, Ren, Li, Zabih, Lim. "Test-Time Distribution Normalization for Contrastively Learned
Visual-language Models", NeurIPS 2023 (arXiv 2302.11084). Definitions and choices:
docs/methods.md#distribution-normalization.
"""

from __future__ import annotations

from pipeline.evaluation import distribution_normalization as dnlib
from pipeline.core.common import PipelineError
from . import register_scoring
from .base import Scoring, ScoringInputs


@register_scoring("dn")
class DN(Scoring):
    """S(q, d) = (q - lam mu_q) . (d - lam mu_d), mu_q over all evaluated queries and mu_d over
    the whole corpus."""

    uses_lambda = True
    label = "DN"
    order = 10
    marker = ("s", "-")
    caption = "DN, means over all test queries and the whole corpus"

    def means(self, inputs: ScoringInputs):
        return [dnlib.dn_means(inputs.queries, inputs.docs)]


@register_scoring("dn*")
class DNStar(Scoring):
    """DN with each mean estimated from `dn_star.samples` random unlabeled queries (of a split
    other than the evaluated one) and corpus documents, repeated `dn_star.repeats` times."""

    uses_lambda = True
    sampled = True
    uses_dn_star = True
    label = "DN*"
    order = 20
    marker = ("^", "--")
    offset = 0.25  # DN* shares DN's lambdas: shifted so that their intervals do not overlap
    caption = "DN*, means from a few random unlabeled queries and documents, mean over repeats"

    @classmethod
    def check(cls, params) -> None:
        if params.dn_star.source_split == params.split:
            raise PipelineError(f"dn_star.source_split: DN* must estimate its means from unlabeled queries of a "
                                f"split other than the evaluated one ({params.split!r})")

    def prepare(self, inputs: ScoringInputs) -> None:
        # Draws depend only on the pool and the seed, so every lambda shares them (and the
        # encoded pool queries, cached in inputs.extra).
        if "dn*" in inputs.extra:
            return
        star, ds = inputs.params.dn_star, inputs.dataset
        if star.source_split not in ds.qrels:
            raise PipelineError(f"dn_star.source_split: {ds.root} has no qrels split {star.source_split!r} "
                                f"(available: {sorted(ds.qrels)})")
        evaluated = set(inputs.query_ids)
        pool = [q for q in ds.qrels[star.source_split] if q in ds.queries and q not in evaluated]
        draws = dnlib.dn_star_draws(len(pool), inputs.num_docs, star.samples, star.repeats, star.seed)
        inputs.extra["dn*"] = {"pool": pool, "draws": draws, "means": None}

    def means(self, inputs: ScoringInputs):
        state = inputs.extra["dn*"]
        if state["means"] is None:
            pool, draws = state["pool"], state["draws"]
            needed = sorted({int(r) for _, rows, _ in draws for r in rows})
            encoded = dict(zip(needed, inputs.encode([inputs.dataset.queries[pool[r]] for r in needed])))
            state["means"] = [dnlib.DNMeans(dnlib.mean_embedding(_stack(encoded, q_rows)),
                                            dnlib.mean_embedding(inputs.docs[d_rows]))
                              for _, q_rows, d_rows in draws]
        return state["means"]


def _stack(encoded: dict, rows):
    import numpy as np

    return np.stack([encoded[int(r)] for r in rows])
