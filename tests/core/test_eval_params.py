"""pipeline.core.eval_params: the evaluate step's parameters and the config's `evaluation:`
section share one set of defaults, each a fresh copy."""

from __future__ import annotations

from pipeline.core import eval_params as E
from pipeline.core import params as P


def test_evaluation_section_shares_the_evaluate_steps_defaults():
    section, step = P.defaults(E.EvaluationSection), P.defaults(E.EvalParams)
    for key in ("scorings", "lambdas", "dn_order", "top_k", "nnn", "qbnorm", "query_bank"):
        assert section[key] == step[key], key
    assert section["search_index"] == step["index"]
    assert section["lambdas"] == [E.DEFAULT_LAMBDA]


def test_the_sections_dn_star_leaves_the_per_job_seed_to_the_step():
    section = P.defaults(E.EvaluationSection)
    assert section["dn_star"] == {"samples": 100, "repeats": 5, "source_split": "train"}
    assert P.defaults(E.EvalParams)["dn_star"]["seed"] == 0


def test_instances_do_not_share_their_lists():
    a, b = E.EvalParams(), E.EvalParams()
    a.scorings.append("nnn")
    a.nnn.k.append(4)
    assert b.scorings == ["dot", "dn", "dn*"] and b.nnn.k == [16]
    assert E.QueryBankParams().split is None and E.QueryBankParams().candidates == 1000
