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
    ("datasets.dev", {"trained_on": "ghost", "source": "embedded", "name": "scifact-mini"},
     "datasets.dev.trained_on: 'ghost' is not another dataset entry"),
    ("datasets.dev", {"trained_on": "scifact-mini", "models_of": "scifact-mini"},
     "datasets.dev: models_of and trained_on exclude each other"),
    ("datasets.dev", {"test_split": "dev"}, "datasets.dev"),
    ("threads", {"train": 0}, "threads.train"),
    ("threads", {"aggregate": 1}, "threads: unknown key(s) ['aggregate']"),
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


# ----------------------------------------------------------------------------- issue 24's keys, before any job
def one_run(run: dict, **top) -> dict:
    return {"datasets": {"d": {"source": "embedded", "name": "scifact-mini"}}, "runs": {"r": run}, **top}


def hf_folder(path, model_type: str):
    """A model folder as far as validation reads it: config.json only."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"model_type": model_type, "num_hidden_layers": 2}))
    return path


def test_checkpointing_an_unsupported_model_is_a_config_error(tmp_path):
    """MPNet (all-mpnet-base-v2's architecture) has no gradient checkpointing in transformers."""
    mpnet = str(hf_folder(tmp_path / "mpnet", "mpnet"))
    with pytest.raises(pcfg.ConfigError) as err:
        pcfg.validate(one_run({"method": "inbatch", "gradient_checkpointing": True, "encoder": {"model": mpnet}}))
    assert "config key runs.r.gradient_checkpointing: the encoder" in str(err.value)
    assert "(MPNetModel) does not support gradient checkpointing" in str(err.value)
    # Set in `training:` for every run: the message names that key and the run.
    with pytest.raises(pcfg.ConfigError, match=r"config key training.gradient_checkpointing \(run r\): .*MPNetModel"):
        pcfg.validate(one_run({"method": "contaccum"}, training={"gradient_checkpointing": True},
                              encoder={"model": mpnet}))
    # Off, or a zero-shot run (nothing is trained): no error.
    pcfg.validate(one_run({"method": "inbatch", "encoder": {"model": mpnet}}))
    pcfg.validate(one_run({"method": "none"}, encoder={"model": mpnet}, training={"gradient_checkpointing": True}))


def test_checkpointing_supported_models_validate(tiny_model_dir):
    shape = {"layers": 2, "hidden": 64, "heads": 2, "intermediate": 128}
    for encoder in ({}, {"model": str(tiny_model_dir)}, {"random_init": True, "shape": shape}):
        pcfg.validate(one_run({"method": "inbatch", "gradient_checkpointing": True, "encoder": encoder}))


def test_checkpointing_check_keeps_validation_torch_free(tmp_path):
    import subprocess
    import sys

    mpnet = hf_folder(tmp_path / "mpnet", "mpnet")
    code = ("import sys, pipeline.core.config as c\n"
            "for model in ('all-MiniLM-L6-v2', sys.argv[1]):\n"
            "    try: c.validate({'datasets': {'d': {'source': 'embedded'}}, 'encoder': {'model': model},\n"
            "                     'runs': {'r': {'method': 'inbatch', 'gradient_checkpointing': True}}})\n"
            "    except c.ConfigError: print('rejected', model)\n"
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code, str(mpnet)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [f"rejected {mpnet}", "[]"]


def test_bad_recipe_keys_fail_when_snakemake_parses_the_workflow(tmp_path):
    """`snakemake -n` on such a config exits non-zero with the messages and plans no job."""
    import os
    import subprocess
    import sys

    mpnet = hf_folder(tmp_path / "mpnet", "mpnet")
    config = one_run({"method": "inbatch", "gradient_checkpointing": True, "encoder": {"model": str(mpnet)}})
    config["runs"]["s"] = {"method": "sogclr", "negative_filter": {"guide": str(tmp_path / "no-guide")}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile",
                           str(REPO / "Snakefile"), "--directory", str(tmp_path),
                           "--configfile", str(tmp_path / "bad.yaml")], cwd=REPO,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "config key runs.r.gradient_checkpointing: the encoder" in out
    assert "config key runs.s.negative_filter.guide:" in out and "no such model folder exists" in out
    assert "Job stats" not in out and not (tmp_path / "results").exists()
