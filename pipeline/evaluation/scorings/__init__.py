"""Scorings: how query and document embeddings are compared at search time (plain dot product,
Distribution Normalization, DN*, ...). One small class per scoring, registered with
`@register_scoring("name")`; the evaluate step, the tables, the plots and MLflow ask this
registry, so a new scoring is one class (in this package, or anywhere that is imported before
the steps run) and a `scorings:` entry in a config.

A scoring that takes DN's lambda yields one result per configured lambda. Each result has one
name, `Scoring.name` (`dot`, `dn@0.25`, `dn*@0.25`), used as-is in tables, per_query.json and
plots; `Scoring.slug` is the same name spelled with the characters that file names and MLflow
keys allow (`dot`, `dn-0.25`, `dnstar-0.25`).
"""

from __future__ import annotations

import math

from pipeline.core.registry import Registry
from .base import Scoring, ScoringInputs
from pipeline.core.eval_params import EvalParams


def _named(cls: type[Scoring], family: str) -> None:
    cls.family = family
    cls.label = cls.__dict__.get("label") or family


# The plain dot product: what every other scoring is compared against, and the only scoring the
# significance tests, the pilot and the MTEB cross-check look at. Other modules name it through
# this constant so that the name lives here only.
BASELINE = "dot"

_REGISTRY = Registry(__name__, "scoring", "scorings", _named)
register_scoring = _REGISTRY.register


def available_scorings() -> list[str]:
    """Registered scoring families in table order (`Scoring.order`, then registration order)."""
    classes = [_REGISTRY.get(name) for name in _REGISTRY.names()]
    ranked = sorted(enumerate(classes), key=lambda item: (item[1].order, item[0]))
    return [cls.family for _, cls in ranked]


def scoring_class(family: str) -> type[Scoring]:
    """The class of a family, or of a table's `scoring` value (`nnn[k=16]` is an `nnn`)."""
    return _REGISTRY.get(family.split("[", 1)[0])


def expand(families: list[str], lambdas: list[float], params=None) -> list[Scoring]:
    """The results a config asks for: one per scoring, times each lambda for lambda scorings and
    each setting for scorings with their own parameters (`params`: the evaluate step's
    EvalParams; the defaults when None)."""
    from dataclasses import replace

    params = replace(params or EvalParams(), lambdas=list(lambdas))
    return [s for family in families for s in scoring_class(family).variants(params)]


def uses_dn_star(families) -> bool:
    """Whether any of these scoring families draws its means from `EvalParams.dn_star`."""
    return any(scoring_class(f).uses_dn_star for f in families)


def from_row(family: str, lam) -> Scoring:
    """The scoring behind a table row (`scoring`, `lambda` columns; lambda NaN/None when unused)."""
    cls = scoring_class(family)
    setting = family[len(cls.family) + 1:-1] if family.endswith("]") else ""
    if lam is None or (isinstance(lam, float) and math.isnan(lam)):
        return cls.from_setting(setting, None)
    return cls.from_setting(setting, float(lam))


__all__ = ["BASELINE", "Scoring", "ScoringInputs", "available_scorings", "expand", "from_row", "register_scoring",
           "scoring_class", "uses_dn_star"]
