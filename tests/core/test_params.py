"""pipeline.core.params: every default written once and read back unchanged, recipes layered over
the defaults (later layers win, optional sections get their own defaults), a train job's JSON
that round-trips to the same recipe, and the shared checks naming the key and the bad value."""

from __future__ import annotations

from dataclasses import asdict, fields

import pytest

from pipeline.core import eval_params as E
from pipeline.core import index_params as I
from pipeline.core import params as P
from pipeline.core.common import PipelineError

SECTIONS = [P.EncoderParams, P.HardNegativeParams, P.FANoiseParams, P.CropParams, P.PairParams,
            P.NegativeFilterParams, P.Recipe, I.IndexParams, E.EvalParams, E.DNStarParams,
            E.QueryBankParams, E.NNNParams, E.QBNormParams, E.EvaluationSection, P.MLflowSection,
            P.DatasetSection]


@pytest.mark.parametrize("cls", SECTIONS, ids=lambda cls: cls.__name__)
def test_defaults_round_trip(cls):
    d = P.defaults(cls)
    assert set(d) == {f.name for f in fields(cls)}
    if all(not hasattr(v, "__dataclass_fields__") for v in vars(cls()).values()):
        assert d == asdict(cls())        # nothing nested: the instance's defaults, as a dict
    assert P.merged(cls, d) == d          # merging the defaults over themselves changes nothing
    assert P.merged(cls, None) == d


def test_defaults_are_fresh_copies():
    first = P.defaults(E.EvalParams)
    first["scorings"].append("nnn")
    first["dn_star"]["samples"] = 1
    again = P.defaults(E.EvalParams)
    assert again["scorings"] == ["dot", "dn", "dn*"]
    assert again["dn_star"]["samples"] == 100


def test_merged_is_one_level_deep_and_keeps_the_other_defaults():
    out = P.merged(I.IndexParams, {"hnsw": {"efSearch": 64}, "index_types": ["hnsw"]})
    assert out["hnsw"] == {"M": 32, "efConstruction": 200, "efSearch": 64}
    assert out["index_types"] == ["hnsw"] and out["batch_size"] == 64


def test_recipe_layers_later_wins_and_encoder_merges():
    recipe = P.resolve_recipe({"batch_size": 16, "encoder": {"pooling": "cls"}},
                              {"batch_size": 32, "method": "contaccum", "encoder": {"tied": False}})
    assert recipe["batch_size"] == 32 and recipe["method"] == "contaccum"
    assert recipe["encoder"]["pooling"] == "cls" and recipe["encoder"]["tied"] is False
    assert recipe["encoder"]["model"] == P.EncoderParams.model
    assert "layers" not in recipe["encoder"] and "shape" not in recipe["encoder"] and "pairs" not in recipe
    assert {k: v for k, v in recipe.items() if k in P.TRAINING_DEFAULTS and k != "batch_size"} == \
        {k: v for k, v in P.TRAINING_DEFAULTS.items() if k != "batch_size"}


def test_optional_sections_get_their_own_defaults_once_present():
    recipe = P.resolve_recipe({"fanoise": {"alpha": 0.2}, "hard_negatives": {"per_query": 3},
                               "pairs": {}, "negative_filter": {"guide": "self"}})
    assert recipe["fanoise"] == {"alpha": 0.2, "scaling": "sublinear"}
    assert recipe["hard_negatives"] == {"source": "bm25", "per_query": 3, "top_k": 30}
    assert recipe["pairs"]["crop"] == P.defaults(P.CropParams)
    assert recipe["negative_filter"]["guide"] == "self"
    assert set(recipe["negative_filter"]) == {f.name for f in fields(P.NegativeFilterParams)}


def test_job_recipe_leaves_new_keys_out_at_their_defaults_and_round_trips():
    recipe = P.resolve_recipe({"method": "inbatch"})
    job = P.job_recipe(recipe)
    assert not set(P.RECIPE_OPTIONAL) & set(job)
    assert P.resolve_recipe(job) == recipe
    changed = P.resolve_recipe({"gradient_checkpointing": True})
    assert P.job_recipe(changed)["gradient_checkpointing"] is True


def test_unknown_key_error_names_it_and_the_allowed_ones():
    with pytest.raises(PipelineError) as err:
        P.check_keys({"batch_size": 1, "batchsize": 2}, ["batch_size", "lr"], "training")
    assert str(err.value) == "training: unknown key(s) ['batchsize']; expected some of ['batch_size', 'lr']"
    with pytest.raises(PipelineError, match="training: expected a JSON object, got list"):
        P.check_keys([1], ["lr"], "training")
    with pytest.raises(PipelineError, match=r"negative_filter: unknown key\(s\) \['treshold'\]"):
        P.check_negative_filter({"guide": "self", "treshold": 0.1})


@pytest.mark.parametrize("value, kwargs, message", [
    (0, {}, "k: expected a positive integer, got 0"),
    (True, {}, "k: expected a positive integer, got True"),
    (-1, {"minimum": 0}, "k: expected a non-negative integer, got -1"),
    (11, {"minimum": 1, "maximum": 10}, r"k: expected an integer in \[1, 10\], got 11"),
    (1.5, {"minimum": None}, "k: expected an integer, got 1.5"),
])
def test_check_int_names_the_key_and_the_range(value, kwargs, message):
    with pytest.raises(PipelineError, match=message):
        P.check_int(value, "k", **kwargs)


def test_checks_accept_good_values_and_name_bad_ones():
    assert P.check_int(3, "k") == 3
    assert P.check_number(1, "tau", 0, 1) == 1.0
    with pytest.raises(PipelineError, match=r"tau: expected a number in \[0, 1\], got 2"):
        P.check_number(2, "tau", 0, 1)
    with pytest.raises(PipelineError, match="tau: expected a number"):
        P.check_number(False, "tau", 0, 1)
    assert P.check_choice("cls", "pooling", ("mean", "cls")) == "cls"
    with pytest.raises(PipelineError, match=r"pooling: unknown value 'max'; allowed: \['mean', 'cls'\]"):
        P.check_choice("max", "pooling", ("mean", "cls"))
    assert P.as_list("dot", "scorings") == ["dot"]
    assert P.as_list(["dn", "dot", "dn"], "scorings") == ["dn", "dot"]
    with pytest.raises(PipelineError, match="scorings: expected a non-empty list"):
        P.as_list([], "scorings")


def test_negative_filter_margin_range_depends_on_its_type():
    assert P.check_negative_filter({"guide": "self", "margin_type": "absolute", "margin": -1.5})["margin"] == -1.5
    with pytest.raises(PipelineError, match=r"negative_filter.margin \(relative\): expected a number in \[-1, 1\]"):
        P.check_negative_filter({"guide": "self", "margin_type": "relative", "margin": -1.5})
    with pytest.raises(PipelineError, match="negative_filter.guide: required"):
        P.check_negative_filter({})


def test_guide_problem_names_a_missing_folder(tmp_path):
    assert P.guide_problem("self") is None
    assert "no such model folder" in P.guide_problem(str(tmp_path / "missing"))
    assert "neither a trained model" in P.guide_problem(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    assert P.guide_problem(str(tmp_path)) is None


def test_default_protocol_by_source():
    assert P.default_protocol("dpr") == "answers"
    assert P.default_protocol("beir") == P.default_protocol("embedded") == "qrels"
