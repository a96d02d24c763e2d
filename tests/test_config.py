"""Config validation: each bad config is rejected before any job runs, naming the key."""

import copy
import json

import pytest
import yaml

from conftest import REPO
from pipeline.core import config as pcfg

BASE = yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def mutate(path: str, value):
    cfg = copy.deepcopy(BASE)
    *parents, last = path.split(".")
    node = cfg
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return cfg


BAD = [
    ("runs.dpr-8.batch_size", -1, "runs.dpr-8.batch_size"),
    ("runs.dpr-8.batch_size", "eight", "runs.dpr-8.batch_size"),
    ("runs.dpr-8.bogus", 1, "runs.dpr-8: unknown key(s) ['bogus']"),
    ("runs.dpr-8.method", "simclr", "runs.dpr-8.method: unknown method 'simclr'"),
    ("runs.dpr-8.temperature", 0, "runs.dpr-8.temperature"),
    ("runs.dpr-8.fanoise", {"alpha": 0.1, "scaling": "cubic"}, "runs.dpr-8.fanoise.scaling"),
    ("runs.dpr-8.accumulation_steps", 4, "runs.dpr-8.accumulation_steps: inbatch uses one batch"),
    ("evaluation.lambdas", [0.25, 1.5], "evaluation.lambdas[1]"),
    ("evaluation.lambdas", [-0.1], "evaluation.lambdas[0]"),
    ("evaluation.scorings", ["dot", "cosine"], "evaluation.scorings[1]"),
    ("evaluation.reference_run", "nope", "evaluation.reference_run"),
    ("evaluation.dn_star", {"samples": 0}, "evaluation.dn_star.samples"),
    ("index.index_types", ["flat", "annoy"], "index.index_types[1]"),
    ("index.index_types", ["hnsw"], "index.index_types: must include 'flat'"),
    ("datasets.scifact-mini", {"source": "ftp"}, "datasets.scifact-mini.source"),
    ("datasets.scifact-mini", {"source": "local"}, "datasets.scifact-mini.path: required"),
    ("seeds", [], "seeds"),
    ("seeds", [1, 1], "seeds"),
    ("encoder.pooling", "max", "encoder.pooling"),
    ("encoder.query_max_length", 0, "encoder.query_max_length"),
    ("experiment", "has space", "experiment"),
    ("unknown_top", 1, "unknown key(s) ['unknown_top']"),
    ("only_runs", ["ghost"], "only_runs: unknown run(s) ['ghost']"),
    ("runs.dpr-8.false_negatives", "drop", "runs.dpr-8.false_negatives"),
    ("runs.dpr-8.sampler", "random", "runs.dpr-8.sampler"),
    ("evaluation.compare", {"dpr-8": "ghost"}, "evaluation.compare.dpr-8: 'ghost' is not a run"),
    ("datasets.dev", {"models_of": "ghost"}, "datasets.dev.models_of: 'ghost' is not another dataset entry"),
    ("datasets.dev", {"models_of": "dev"}, "datasets.dev.models_of: 'dev' is not another dataset entry"),
    ("datasets.dev", {"test_split": "dev"}, "datasets.dev"),
]


@pytest.mark.parametrize("path,value,expected", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_config_names_the_key(path, value, expected):
    with pytest.raises(pcfg.ConfigError) as err:
        pcfg.validate(mutate(path, value))
    assert expected in str(err.value)


def test_defaults_are_filled():
    cfg = pcfg.validate(mutate("evaluation.dn_star", {}))
    assert cfg["evaluation"]["dn_star"] == {"samples": 100, "repeats": 5, "source_split": "train"}
    assert cfg["datasets"]["scifact-mini"]["test_split"] == "test"
    assert cfg["mlflow"]["store"] == "results/mlflow.db"


def test_recipe_layers_merge_in_order():
    cfg = pcfg.validate(mutate("runs.dpr-8.encoder", {"tied": True}))
    recipe = pcfg.recipe(cfg, "dpr-8", "scifact-mini")
    assert recipe["encoder"]["tied"] is True and recipe["encoder"]["pooling"] == "mean"
    assert recipe["train_passage_max_length"] == BASE["training"]["train_passage_max_length"]
    assert recipe["lr"] == BASE["training"]["lr"] and recipe["train_split"] == "train"
    assert pcfg.recipe(cfg, "contaccum-8x4")["encoder"]["tied"] is False


def test_only_runs_restricts_grid_and_drops_missing_reference():
    cfg = pcfg.validate(mutate("only_runs", ["dpr-8"]))
    assert list(cfg["runs"]) == ["dpr-8"] and "reference_run" not in cfg["evaluation"]
    assert [j.key for j in pcfg.jobs(cfg)] == ["scifact-mini/dpr-8/seed13"]


def test_zero_shot_model_is_seed_independent():
    cfg = pcfg.validate(mutate("seeds", [1, 2]))
    assert pcfg.model_tag(cfg, "zeroshot", 1) == pcfg.model_tag(cfg, "zeroshot", 2) == "base"
    assert pcfg.model_tag(cfg, "dpr-8", 2) == "seed2"


@pytest.mark.parametrize("name", ["config.yaml", "scifact.yaml", "paper.yaml"])
def test_shipped_configs_validate(name):
    assert pcfg.jobs(pcfg.load(REPO / "config" / name))


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets:\n  x: [unclosed\n")
    with pytest.raises(pcfg.ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        pcfg.load(bad)


def test_command_line_overrides_are_typed():
    """`--config 'seeds=[1,2]'` reaches the Snakefile as strings (YAML BaseLoader)."""
    cfg = pcfg.validate({**BASE, "seeds": ["1", "2"], "runs": {"zeroshot": {"method": "none"},
                                                              "d": {"method": "inbatch", "batch_size": "8",
                                                                     "lr": "1e-5", "query_bank": "false"}}})
    assert cfg["seeds"] == [1, 2]
    assert cfg["runs"]["d"]["batch_size"] == 8 and cfg["runs"]["d"]["lr"] == 1e-5
    assert cfg["runs"]["d"]["query_bank"] is False


@pytest.mark.parametrize("name", ["config.yaml", "scifact.yaml", "paper.yaml", "gradnorm.yaml"])
def test_validation_accepts_its_own_output(name):
    """Steps re-validate the filled config they receive as JSON (the aggregate rule does)."""
    cfg = pcfg.load(REPO / "config" / name)
    assert pcfg.validate(json.loads(json.dumps(cfg))) == cfg


def test_job_recipe_leaves_new_keys_out_at_their_defaults_and_round_trips():
    """Keys added after results were published must not change older configs' train-job
    parameters (Snakemake would re-run them), and the step must get the same recipe back."""
    from pipeline.core.params import RECIPE_OPTIONAL, job_recipe, resolve_recipe

    recipe = resolve_recipe({"method": "inbatch", "batch_size": 8})
    job = job_recipe(recipe)
    assert not set(RECIPE_OPTIONAL) & set(job)
    assert resolve_recipe(job) == recipe
    changed = resolve_recipe({"method": "sogclr", "batch_size": 8, "gradient_checkpointing": True,
                              "sogclr_gamma": 0.5})
    assert job_recipe(changed)["gradient_checkpointing"] is True and job_recipe(changed)["sogclr_gamma"] == 0.5
