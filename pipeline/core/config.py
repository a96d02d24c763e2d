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

from pipeline.core import params as P
from pipeline.core.eval_params import DNStarParams, EvaluationSection
from pipeline.core.common import PipelineError
from pipeline.core.config_checks import (dev_split_problems, dpr_dataset_problems, has_own_negatives,
                                         negative_filter_problems)
from pipeline.core.index_params import HNSWParams, IndexParams, IVFParams, check_index_type
from pipeline.core.layout import SHARED_NAMES, model_tag as _tag
from pipeline.core.registry import lookup
from pipeline.core.params import TRAINING_DEFAULTS, ZERO_SHOT  # noqa: F401  (re-exported for callers and tests)

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"


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


def validate(config: dict) -> dict:
    """Validate a raw config mapping and return a copy with defaults filled in. Raises
    ConfigError naming every offending key before any job runs."""
    if not isinstance(config, dict):
        raise ConfigError("config: expected a mapping at the top level")
    config = _typed_scalars(copy.deepcopy(config))
    errors = schema_errors(config)
    if errors:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(errors))
    _fill_defaults(config)
    _select_runs(config)
    _semantic_checks(config)
    return config


def _fill_defaults(config: dict) -> None:
    """Defaults come from the dataclasses in pipeline.core.params (the schema has none)."""
    config.setdefault("experiment", "default")
    config.setdefault("seeds", [13])
    config["encoder"] = P.merged(P.EncoderParams, config.get("encoder"))
    config.setdefault("training", {})
    index = P.merged(IndexParams, config.get("index"))
    config["index"] = {**index, "hnsw": P.merged(HNSWParams, index["hnsw"]),
                       "ivf": P.merged(IVFParams, index["ivf"])}
    evaluation = P.merged(EvaluationSection, config.get("evaluation"))
    if evaluation["reference_run"] is None:
        evaluation.pop("reference_run")
    config["evaluation"] = evaluation
    config["mlflow"] = P.merged(P.MLflowSection, config.get("mlflow"))
    given = config["datasets"]
    config["datasets"] = {name: _dataset_defaults(_inherit(name, ds, given)) for name, ds in given.items()}


def _inherit(name: str, ds: dict, datasets: dict) -> dict:
    """An entry with `models_of` takes every key it does not set from the entry it evaluates; one
    with `trained_on` keeps its own data and only borrows the other entry's models."""
    for key in ("models_of", "trained_on"):
        base = ds.get(key)
        if base is not None and (base == name or base not in datasets or _borrows_models(datasets[base])):
            trains = sorted(d for d in datasets if not _borrows_models(datasets[d]) and d != name)
            raise ConfigError(f"config key datasets.{name}.{key}: {base!r} is not another dataset entry with models "
                              f"of its own; expected one of {trains}")
    if ds.get("models_of") and ds.get("trained_on"):
        raise ConfigError(f"config key datasets.{name}: models_of and trained_on exclude each other (models_of also "
                          f"borrows the other entry's corpus and index; trained_on encodes this entry's own corpus)")
    return {**datasets[ds["models_of"]], **ds} if ds.get("models_of") else ds


def _borrows_models(ds: dict) -> bool:
    return bool(ds.get("models_of") or ds.get("trained_on"))


def _dataset_defaults(given: dict) -> dict:
    """A dataset section with its defaults. Optional keys left unset stay absent (the filled
    config is validated again by later steps, and a qrels dataset's section stays what it was);
    the `dpr` source's own defaults appear only on dpr datasets."""
    ds = P.merged(P.DatasetSection, given)
    if ds["protocol"] is None:
        ds["protocol"] = P.default_protocol(ds["source"])
    for key in list(ds):
        if ds[key] is None or (ds["source"] != "dpr" and key in P.DPR_DATASET_KEYS and key not in given):
            del ds[key]
    return ds


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
    evaluation["compare"] = {run: ref for run, ref in evaluation.get("compare", {}).items()
                             if run in config["runs"] and ref in config["runs"]}


def _semantic_checks(config: dict) -> None:
    available = lookup("pipeline.training.methods:available")  # the stages' registries, by name (core imports no stage)
    available_protocols = lookup("pipeline.evaluation.protocols:available_protocols")
    available_scorings = lookup("pipeline.evaluation.scorings:available_scorings")
    uses_dn_star = lookup("pipeline.evaluation.scorings:uses_dn_star")

    known = set(available()) | {ZERO_SHOT}
    problems = []
    if config["experiment"] in SHARED_NAMES:
        problems.append(f"config key experiment: {config['experiment']!r} names a folder every experiment shares "
                        f"(results/{config['experiment']}); choose another name (taken: {sorted(SHARED_NAMES)})")
    for run, run_recipe in config["runs"].items():
        merged = P.resolve_recipe(config.get("training"), run_recipe)
        if merged["method"] not in known:
            problems.append(f"config key runs.{run}.method: unknown method {merged['method']!r}; "
                            f"expected one of {sorted(known)}")
        if merged["negative_filter"]:
            problems += negative_filter_problems(f"config key runs.{run}.negative_filter", merged["negative_filter"])
        if merged["method"] == "inbatch" and merged["accumulation_steps"] != 1:
            problems.append(f"config key runs.{run}.accumulation_steps: inbatch uses one batch per update; "
                            "use gradaccum/gradcache/contaccum for K > 1")
        problems += _regime_problems(config, run)
    for name, ds in config["datasets"].items():
        if ds["source"] == "local" and "path" not in ds:
            problems.append(f"config key datasets.{name}.path: required when source is 'local'")
        problems += dpr_dataset_problems(name, ds)
        problems += dev_split_problems(name, ds)
        if ds["protocol"] not in available_protocols():
            problems.append(f"config key datasets.{name}.protocol: {ds['protocol']!r} is not one of "
                            f"{available_protocols()}")
    for run in config["runs"]:
        for name in config["datasets"]:
            hn = recipe(config, run, name)["hard_negatives"]
            if hn and hn["source"] == "dataset" and not has_own_negatives(config["datasets"][name]):
                problems.append(f"config key runs.{run}.hard_negatives.source: 'dataset' needs the dataset's own "
                                f"hard negatives, which datasets.{name} (source {config['datasets'][name]['source']!r}"
                                f", no training file) does not have; use bm25, or set datasets.{name}.hard_negatives: "
                                "bm25")
    evaluation = config.get("evaluation", {})
    ds_test = {name: ds["test_split"] for name, ds in config["datasets"].items()}
    source_split = evaluation["dn_star"].get("source_split", DNStarParams.source_split)
    if uses_dn_star(s for s in evaluation["scorings"] if s in available_scorings()):
        for name, split in ds_test.items():
            if split == source_split:
                problems.append(f"config key evaluation.dn_star.source_split: {source_split!r} is the test split of "
                                f"datasets.{name}; DN* needs unlabeled queries of another split")
    for i, scoring in enumerate(evaluation["scorings"]):
        if scoring not in available_scorings():
            problems.append(f"config key evaluation.scorings[{i}]: {scoring!r} is not one of {available_scorings()}")
    problems += lookup("pipeline.evaluation.querybank:config_problems")(evaluation, config["datasets"])
    ref = evaluation.get("reference_run")
    if ref is not None and ref not in config["runs"]:
        problems.append(f"config key evaluation.reference_run: {ref!r} is not a run; expected one of "
                        f"{sorted(config['runs'])}")
    for run, other in evaluation["compare"].items():
        for key, name in (("evaluation.compare", run), (f"evaluation.compare.{run}", other)):
            if name not in config["runs"]:
                problems.append(f"config key {key}: {name!r} is not a run; expected one of {sorted(config['runs'])}")
    index = config["index"]
    if index["shard_size"] is not None and index["shards"] is not None:
        problems.append("config key index: set shard_size (passages per shard) or shards (the number of shards), "
                        "not both")
    for i, kind in enumerate(index["index_types"]):
        try:
            check_index_type(kind, f"config key index.index_types[{i}]")
        except PipelineError as exc:
            problems.append(str(exc))
    if evaluation["search_index"] not in index["index_types"]:
        problems.append("config key evaluation.search_index: must be one of index.index_types "
                        f"{index['index_types']}")
    if "flat" not in index["index_types"]:
        problems.append("config key index.index_types: must include 'flat' (approximate indexes are "
                        "measured against it)")
    if problems:  # a shared section's problem is found once per run: report it once
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(dict.fromkeys(problems)))


def _regime_problems(config: dict, run: str) -> list[str]:
    """The encoder's `layers`/`shape` (a depth above the model's fails here, not in the train job)
    and the `pairs` section's crop lengths."""
    encoder_problems = lookup("pipeline.models.encoder_shape:encoder_problems")
    checkpointing_problems = lookup("pipeline.models.encoder_shape:checkpointing_problems")

    resolved = recipe(config, run)
    where = f"config key runs.{run}.encoder" if "encoder" in config["runs"][run] else "config key encoder"
    problems = encoder_problems(resolved["encoder"], where)
    if resolved["gradient_checkpointing"] and is_trained(config, run):
        key = (f"runs.{run}.gradient_checkpointing" if "gradient_checkpointing" in config["runs"][run]
               else f"training.gradient_checkpointing (run {run})")
        problems += checkpointing_problems(resolved["encoder"], f"config key {key}")
    derived = [s for s in (resolved.get("pairs") or {}).get("sources", ()) if s != "qrels"]
    if derived and resolved["hard_negatives"]:
        # Derived pairs carry no mined negatives; a batch mixing both would give some rows an extra
        # column and others none (and uneven slices across processes).
        problems.append(f"config key runs.{run}.pairs.sources: {derived} pairs have no hard negatives; drop "
                        "hard_negatives or train on qrels only")
    crop = (resolved.get("pairs") or {}).get("crop")
    if crop and crop["min_words"] > crop["max_words"]:
        problems.append(f"config key runs.{run}.pairs.crop: min_words {crop['min_words']} is above max_words "
                        f"{crop['max_words']}")
    return problems


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
    merged = P.resolve_recipe({"encoder": config.get("encoder", {})}, config.get("training"), config["runs"][run])
    if dataset is not None and merged.get("train_split") is None:
        merged["train_split"] = config["datasets"][dataset].get("train_split", "train")
    override = config["datasets"][dataset].get("hard_negatives") if dataset is not None else None
    if override and merged["hard_negatives"]:
        merged["hard_negatives"]["source"] = override
    return merged


def is_trained(config: dict, run: str) -> bool:
    return config["runs"][run]["method"] != ZERO_SHOT


def model_dataset(config: dict, dataset: str) -> str:
    """The dataset entry whose trained models `dataset` is evaluated with: its `models_of` or
    `trained_on`, else itself."""
    entry = config["datasets"][dataset]
    return entry.get("models_of") or entry.get("trained_on") or dataset


def data_dataset(config: dict, dataset: str) -> str:
    """The dataset entry whose data folder and index `dataset`'s evaluation reads: its `models_of`
    (the same corpus under another test split), else itself (a `trained_on` entry encodes its own)."""
    return config["datasets"][dataset].get("models_of") or dataset


def model_tag(config: dict, run: str, seed: int) -> str:
    """Zero-shot models do not depend on the seed, so they are encoded once ('base')."""
    return _tag(seed, is_trained(config, run))


def evaluate_params(config: dict, dataset: str, seed: int) -> dict:
    """The evaluate step's parameters for one job, translated from the config's `evaluation` and
    `index` sections (significance settings belong to the aggregate step and are not passed)."""
    evaluation = config["evaluation"]
    return {
        "split": config["datasets"][dataset]["test_split"],
        "protocol": config["datasets"][dataset]["protocol"],
        "scorings": evaluation["scorings"],
        "lambdas": evaluation["lambdas"],
        "dn_order": evaluation["dn_order"],
        "dn_star": {**evaluation["dn_star"], "seed": seed},
        "nnn": evaluation["nnn"],
        "qbnorm": evaluation["qbnorm"],
        # The reference bank defaults to the dataset's training queries.
        "query_bank": {**evaluation["query_bank"],
                       "split": evaluation["query_bank"]["split"] or config["datasets"][dataset]["train_split"]},
        "index": evaluation["search_index"],
        "approx_indexes": [t for t in config["index"]["index_types"] if t != "flat"],
        "top_k": evaluation["top_k"],
        "seed": seed,
    }


def jobs(config: dict) -> list[Job]:
    return [Job(d, r, s) for d in config["datasets"] for r in config["runs"] for s in config["seeds"]]


def grid_spec(config: dict) -> dict:
    """Everything that decides a grid's tables: each dataset with the resolved recipe of every run
    on it, the seeds, the index and the evaluation settings."""
    return {"datasets": {name: {"dataset": ds, "runs": {run: P.job_recipe(recipe(config, run, name)) for run in config["runs"]}}
                         for name, ds in config["datasets"].items()},
            "seeds": list(config["seeds"]), "index": config["index"], "evaluation": config["evaluation"]}


def grid_digest(config: dict) -> str:
    """A short digest of `grid_spec`: written into the tables' grid.json and MLflow, and part of
    the workflow's final target, so tables of another grid are detected and rebuilt."""
    return stable_hash(grid_spec(config))


def stable_hash(obj: Any, length: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:length]


def to_json(obj: Any) -> str:
    # Insertion order (the YAML order) is kept so tables list runs as the config does.
    return json.dumps(obj, separators=(",", ":"))
