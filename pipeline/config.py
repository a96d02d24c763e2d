"""Experiment configuration: validation against config/schema.yaml (unknown keys, wrong types
and out-of-range values are rejected with the key path), defaults, and the resolved grid
datasets x runs x seeds that the Snakefile expands."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .common import PipelineError

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "config" / "schema.yaml"
ZERO_SHOT = "none"

# Defaults for every training recipe; `training:` in the config overrides them and each run
# overrides `training:`. Kept here rather than in the schema so the three layers merge cleanly.
TRAINING_DEFAULTS: dict[str, Any] = {
    "batch_size": 8,
    "accumulation_steps": 1,
    "temperature": 0.05,
    "memory_size": 0,
    "query_bank": True,
    "bank_update": "micro",
    "reset_bank_each_step": False,
    "fanoise": None,
    "hard_negatives": None,
    "epochs": 1,
    "max_steps": None,
    "lr": 2e-5,
    "weight_decay": 0.01,
    "adam_eps": 1e-8,
    "warmup_steps": 0,
    "warmup_ratio": 0.1,
    "grad_clip": 2.0,
    "train_query_max_length": None,
    "train_passage_max_length": None,
    "checkpoint_every": 0,
    "device": "auto",
    "cuda_memory_fraction": None,
    "train_split": None,
    "processes": 1,
    "precision": "fp32",
}


class ConfigError(PipelineError):
    pass


def _key_path(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def schema_errors(config: dict) -> list[str]:
    """Every schema violation as 'config key a.b[2]: message', in key order."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(load_schema())
    messages = []
    for err in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        # oneOf/allOf wrap the useful message; report the deepest matching sub-error.
        leaf = err
        while leaf.context:
            leaf = sorted(leaf.context, key=lambda e: -len(e.absolute_path))[0]
        path = _key_path(leaf.absolute_path) if leaf.absolute_path else _key_path(err.absolute_path)
        msg = leaf.message
        if leaf.validator == "additionalProperties" and isinstance(leaf.instance, dict):
            allowed = sorted(leaf.schema.get("properties", {}))
            unknown = sorted(k for k in leaf.instance if k not in allowed)
            msg = f"unknown key(s) {unknown}; allowed: {allowed}"
        messages.append(f"config key {path}: {msg}")
    return messages


def validate(config: dict, *, fill_defaults: bool = True) -> dict:
    """Validate a raw config mapping and return a copy with defaults filled in. Raises
    ConfigError naming every offending key before any job runs."""
    if not isinstance(config, dict):
        raise ConfigError("config: expected a mapping at the top level")
    config = _typed_scalars(copy.deepcopy(config))
    errors = schema_errors(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    if fill_defaults:
        from snakemake.utils import validate as snakemake_validate

        snakemake_validate(config, str(SCHEMA_PATH), set_default=True)
    _select_runs(config)
    _semantic_checks(config)
    return config


def _typed_scalars(node):
    """Snakemake parses nested `--config key=[...]` values with YAML's BaseLoader, which keeps
    every scalar a string ('13', 'true'); read such strings as YAML would in a config file."""
    if isinstance(node, dict):
        return {key: _typed_scalars(value) for key, value in node.items()}
    if isinstance(node, list):
        return [_typed_scalars(value) for value in node]
    if isinstance(node, str) and node.strip() == node and node:
        for number in (int, float):  # PyYAML's YAML 1.1 reads '1e-5' as a string
            try:
                return number(node)
            except ValueError:
                pass
        try:
            value = yaml.safe_load(node)
        except yaml.YAMLError:
            return node
        if value is None or isinstance(value, (bool, int, float)):
            return value
    return node


def _select_runs(config: dict) -> None:
    only = config.pop("only_runs", None)
    if only is None:
        return
    unknown = [r for r in only if r not in config["runs"]]
    if unknown:
        raise ConfigError(f"config key only_runs: unknown run(s) {unknown}; expected some of {sorted(config['runs'])}")
    config["runs"] = {r: config["runs"][r] for r in only}
    evaluation = config.get("evaluation", {})
    if evaluation.get("reference_run") not in config["runs"]:
        evaluation.pop("reference_run", None)  # no significance tests when the reference is not run


def _semantic_checks(config: dict) -> None:
    from .methods import available

    known = set(available()) | {ZERO_SHOT}
    problems = []
    for run, recipe in config["runs"].items():
        merged = {**TRAINING_DEFAULTS, **config.get("training", {}), **recipe}
        if merged["method"] not in known:
            problems.append(f"config key runs.{run}.method: unknown method {merged['method']!r}; "
                            f"expected one of {sorted(known)}")
        if merged["method"] == "inbatch" and merged["accumulation_steps"] != 1:
            problems.append(f"config key runs.{run}.accumulation_steps: inbatch uses one batch per update; "
                            "use gradaccum/gradcache/contaccum for K > 1")
    for name, ds in config["datasets"].items():
        if ds["source"] == "local" and "path" not in ds:
            problems.append(f"config key datasets.{name}.path: required when source is 'local'")
    evaluation = config.get("evaluation", {})
    ref = evaluation.get("reference_run")
    if ref is not None and ref not in config["runs"]:
        problems.append(f"config key evaluation.reference_run: {ref!r} is not a run; expected one of "
                        f"{sorted(config['runs'])}")
    index = config.get("index", {})
    if evaluation.get("search_index", "flat") not in index.get("index_types", ["flat"]):
        problems.append("config key evaluation.search_index: must be one of index.index_types "
                        f"{index.get('index_types', ['flat'])}")
    if "flat" not in index.get("index_types", ["flat"]):
        problems.append("config key index.index_types: must include 'flat' (approximate indexes are "
                        "measured against it)")
    if problems:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))


def load(path: str | Path) -> dict:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    return validate(raw or {})


# ----------------------------------------------------------------------------- the grid
@dataclass(frozen=True)
class Job:
    dataset: str
    run: str
    seed: int

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.run}/seed{self.seed}"


def recipe(config: dict, run: str, dataset: str | None = None) -> dict:
    """The fully resolved training recipe of `run`: defaults < training < the run itself, with
    the encoder section merged the same way and the dataset's train split filled in."""
    merged = {**TRAINING_DEFAULTS, **config.get("training", {}), **config["runs"][run]}
    merged["encoder"] = {**config.get("encoder", {}), **config.get("training", {}).get("encoder", {}),
                         **config["runs"][run].get("encoder", {})}
    if dataset is not None and merged.get("train_split") is None:
        merged["train_split"] = config["datasets"][dataset].get("train_split", "train")
    return merged


def is_trained(config: dict, run: str) -> bool:
    return config["runs"][run]["method"] != ZERO_SHOT


def model_tag(config: dict, run: str, seed: int) -> str:
    """Zero-shot models do not depend on the seed, so they are encoded once ('base')."""
    return f"seed{seed}" if is_trained(config, run) else "base"


def evaluate_params(config: dict, dataset: str, seed: int) -> dict:
    """The evaluate step's parameters for one job, translated from the config's `evaluation` and
    `index` sections (significance settings belong to the aggregate step and are not passed)."""
    evaluation = config["evaluation"]
    return {
        "split": config["datasets"][dataset]["test_split"],
        "scorings": evaluation["scorings"],
        "lambdas": evaluation["lambdas"],
        "dn_order": evaluation["dn_order"],
        "dn_star": {**evaluation["dn_star"], "seed": seed},
        "index": evaluation["search_index"],
        "approx_indexes": [t for t in config["index"]["index_types"] if t != "flat"],
        "top_k": evaluation["top_k"],
        "seed": seed,
    }


def jobs(config: dict) -> list[Job]:
    return [Job(d, r, s) for d in config["datasets"] for r in config["runs"] for s in config["seeds"]]


def stable_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def to_json(obj: Any) -> str:
    # Insertion order (the YAML order) is kept so tables list runs as the config does.
    return json.dumps(obj, separators=(",", ":"))
