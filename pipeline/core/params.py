"""Typed parameters with every default in one place (Tevatron-style argument dataclasses).

The experiment config (validated for types and ranges by config/schema.yaml, which carries no
defaults) and every step's JSON parameters are filled from these dataclasses, so a default is
written exactly once. `check_int`/`check_number`/`check_keys` are the one range and key check
the steps use for parameters given on their command line.

The index step's parameters live in `pipeline.core.index_params`, the evaluate step's in
`pipeline.core.eval_params`. Nothing here imports torch: config validation and `snakemake -n` stay fast.
"""

from __future__ import annotations

import copy
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from pipeline.core.common import PipelineError

ZERO_SHOT = "none"  # the `method:` of a run that is not trained


# ----------------------------------------------------------------------------- shared checks
def check_keys(obj: Any, allowed, where: str) -> dict:
    if not isinstance(obj, dict):
        raise PipelineError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(allowed))
    if unknown:
        raise PipelineError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return obj


def check_int(value: Any, key: str, minimum: int | None = 1, maximum: int | None = None) -> int:
    """An integer (not a bool) within [minimum, maximum]; the message names the key."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if minimum == 1 and maximum is None:
            what = "a positive integer"
        elif minimum == 0 and maximum is None:
            what = "a non-negative integer"
        else:
            what = f"an integer in [{minimum}, {maximum}]" if maximum is not None else f"an integer >= {minimum}"
            what = what if minimum is not None else "an integer"
        raise PipelineError(f"{key}: expected {what}, got {value!r}")
    return value


def check_number(value: Any, key: str, minimum: float, maximum: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (minimum <= float(value) <= maximum):
        raise PipelineError(f"{key}: expected a number in [{minimum:g}, {maximum:g}], got {value!r}")
    return float(value)


# Autocast precisions of the encoder forward (training and corpus encoding), each with the torch
# dtype it names; fp32 computes without autocast. One table so every CLI and check accepts the same.
PRECISIONS = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def check_choice(value: Any, key: str, choices) -> Any:
    if value not in choices:
        raise PipelineError(f"{key}: unknown value {value!r}; allowed: {list(choices)}")
    return value


def as_list(value: Any, key: str) -> list:
    """A scalar or a non-empty list, as a de-duplicated list."""
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise PipelineError(f"{key}: expected a non-empty list")
    return list(dict.fromkeys(value))


def defaults(cls) -> dict:
    """The defaults of a parameter dataclass as a plain dict (nested dataclasses included)."""
    out = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = copy.deepcopy(f.default)
        elif f.default_factory is not MISSING:
            value = f.default_factory()
            out[f.name] = asdict(value) if hasattr(value, "__dataclass_fields__") else value
    return out


def merged(cls, given: dict | None) -> dict:
    """`given` over the dataclass defaults; nested sections are merged one level deep."""
    out = defaults(cls)
    for key, value in (given or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = copy.deepcopy(value)
    return out


# ----------------------------------------------------------------------------- encoder
@dataclass
class EncoderParams:
    """The `encoder:` section. `model` is a hub id, a local folder or the packaged MiniLM alias;
    `random_init` builds the same architecture with fresh weights (the from-scratch control).
    `layers` keeps the first L transformer layers; `shape` ({layers, hidden, heads, intermediate},
    with random_init) builds a fresh BERT of that size with the model's tokenizer
    (pipeline.models.encoder_shape)."""

    model: str = "all-MiniLM-L6-v2"
    pooling: str = "mean"
    normalize: bool = True
    query_max_length: int = 64
    passage_max_length: int = 256
    tied: bool = True
    random_init: bool = False
    layers: int | None = None
    shape: dict | None = None


# ----------------------------------------------------------------------------- training
@dataclass
class HardNegativeParams:
    # bm25: mined by pipeline.training.hardneg (the top `per_query` of `top_k`, fixed for the whole run);
    # dataset: the dataset's own hard_negatives/train.jsonl (DPR's hard_negative_ctxs, Tevatron's
    # negative_passages), `per_query` drawn afresh each epoch (pipeline.training.hardneg.draw_per_epoch).
    source: str = "bm25"
    per_query: int = 1      # mined negatives added to each training example
    top_k: int = 30         # negatives mined per query (the pool `per_query` is taken from)


@dataclass
class FANoiseParams:
    alpha: float = 0.1
    scaling: str = "sublinear"


@dataclass
class CropParams:
    # Contriever-style independent crops: each side of a pair is a span of min_words..max_words
    # consecutive words of the same passage's text (uniform length, uniform start).
    min_words: int = 10
    max_words: int = 50


@dataclass
class PairParams:
    """The `pairs:` section: where training pairs come from (pipeline.training.pairs). qrels: the train
    split's judged pairs; title: a passage's title -> its text; crop: two independent random
    spans of one passage. The derived pairs are drawn afresh each epoch from (seed, epoch)."""

    sources: list = field(default_factory=lambda: ["qrels"])
    crop: CropParams = field(default_factory=CropParams)


@dataclass
class NegativeFilterParams:
    """`negative_filter:` guided false-negative filtering (docs/methods.md#guided-false-negative-filtering).
    A column j leaves row i's softmax when the guide scores it above the row's positive minus the
    margin: absolute g_ij > g_ii - margin; relative g_ij > g_ii - |g_ii| * margin."""

    guide: str | None = None            # "self" (the model being trained) or a model folder / the packaged MiniLM
    margin: float = 0.0
    margin_type: str = "absolute"       # absolute | relative


GUIDE_SELF = "self"
MARGIN_TYPES = ("absolute", "relative")
# Guide scores are cosines in [-1, 1]: an absolute margin beyond 2 filters everything (or nothing);
# a relative margin is a share of |g_ii|. Negative margins keep columns that tie the positive
# (Qwen3-Embedding's rule g_ij > g_ii + 0.1 is absolute margin -0.1).
MARGIN_RANGES = {"absolute": (-2.0, 2.0), "relative": (-1.0, 1.0)}


def check_negative_filter(value: Any, where: str = "negative_filter") -> dict:
    """A `negative_filter` section with its defaults, or a PipelineError naming the key. Checks
    keys, the margin type and the margin's range; whether the guide exists is
    `guide_problem`'s business (it touches the file system)."""
    check_keys(value, [f.name for f in fields(NegativeFilterParams)], where)
    out = merged(NegativeFilterParams, value)
    if not isinstance(out["guide"], str) or not out["guide"]:
        raise PipelineError(f"{where}.guide: required; expected 'self' or a model folder, got {out['guide']!r}")
    check_choice(out["margin_type"], f"{where}.margin_type", MARGIN_TYPES)
    low, high = MARGIN_RANGES[out["margin_type"]]
    out["margin"] = check_number(out["margin"], f"{where}.margin ({out['margin_type']})", low, high)
    return out


def guide_problem(guide: str, where: str = "negative_filter.guide") -> str | None:
    """Why `guide` cannot be loaded as a guide model (None if it can): 'self', the packaged
    MiniLM, or an existing folder holding a trained model (bi_encoder.json) or a Hugging Face
    model (config.json)."""
    from pathlib import Path

    if guide == GUIDE_SELF or guide in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "minilm"):
        return None
    path = Path(guide).expanduser()
    if not path.is_dir():
        return f"{where}: {guide!r} is not 'self' and no such model folder exists"
    if not (path / "bi_encoder.json").is_file() and not (path / "config.json").is_file():
        return f"{where}: {guide} holds neither a trained model (bi_encoder.json) nor a Hugging Face model (config.json)"
    return None


@dataclass
class Recipe:
    """One run's training recipe: defaults < the config's `training:` < the run's own keys."""

    method: str = ZERO_SHOT
    batch_size: int = 8                 # N (inbatch) or N_local per micro-batch / chunk
    accumulation_steps: int = 1         # K
    temperature: float = 0.05
    memory_size: int = 0                # ContAccum bank size, in samples
    query_bank: bool = True             # False: passage-only bank (pre-batch negatives)
    bank_update: str = "micro"          # micro: enqueue after each micro-batch; step: after the update
    reset_bank_each_step: bool = False  # the "without past encoder" ablation
    fanoise: dict | None = None         # FANoiseParams as a dict, or None
    hard_negatives: dict | None = None  # HardNegativeParams as a dict, or None
    epochs: float = 1
    max_steps: int | None = None
    lr: float = 2e-5
    weight_decay: float = 0.01
    adam_eps: float = 1e-8
    warmup_steps: int = 0
    warmup_ratio: float = 0.1
    grad_clip: float | None = 2.0
    train_query_max_length: int | None = None
    train_passage_max_length: int | None = None
    checkpoint_every: int = 0
    device: str = "auto"
    cuda_memory_fraction: float | None = None
    train_split: str | None = None
    processes: int = 1                  # training processes (torchrun); batch_size is per process
    precision: str = "fp32"             # fp32 | bf16 | fp16 autocast of the encoder forward
    # mask: a column holding a known positive of a row's query leaves that row's softmax;
    # keep: it is scored as a negative, as DPR and the ContAccum paper do (docs/methods.md#false-negatives)
    false_negatives: str = "mask"
    sampler: str = "shuffle"            # shuffle | distinct: no query or passage twice in one update
    pairs: dict | None = None           # PairParams as a dict; None: the train split's qrels only
    # Recompute each encoder layer's activations in backward (both towers): less activation
    # memory for more compute; gradients are unchanged (docs/methods.md#gradient-checkpointing).
    gradient_checkpointing: bool = False
    sogclr_gamma: float = 0.9           # SogCLR's moving-average rate for u_i, in (0, 1]
    negative_filter: dict | None = None  # NegativeFilterParams as a dict, or None (no guide)
    encoder: dict = field(default_factory=lambda: asdict(EncoderParams()))


ENCODER_OPTIONAL = ("layers", "shape")


def resolve_recipe(*layers: dict | None) -> dict:
    """Merge recipe layers (later wins) over the defaults; the optional sub-sections get their
    own defaults once present. Returns a plain dict, what methods and the JSON argument use."""
    out = defaults(Recipe)
    encoder = dict(out.pop("encoder"))
    for layer in layers:
        layer = dict(layer or {})
        encoder.update(layer.pop("encoder", {}) or {})
        out.update(layer)
    # Keys that are new since results were published stay out of the recipe at their defaults, so
    # the train jobs' parameters (and hence Snakemake's rerun decisions) of older configs are unchanged.
    for key in ENCODER_OPTIONAL:
        if encoder.get(key) is None:
            encoder.pop(key, None)
    out["encoder"] = encoder
    if out.get("pairs") is None:
        out.pop("pairs", None)
    else:
        out["pairs"] = merged(PairParams, out["pairs"])
        out["pairs"]["crop"] = merged(CropParams, out["pairs"]["crop"])
    if out["fanoise"]:
        out["fanoise"] = merged(FANoiseParams, out["fanoise"])
    if out["hard_negatives"]:
        out["hard_negatives"] = merged(HardNegativeParams, out["hard_negatives"])
    if out["negative_filter"]:
        out["negative_filter"] = merged(NegativeFilterParams, out["negative_filter"])
    return out


# Recipe keys added after results were published: at these values they are left out of a train
# job's JSON, so Snakemake does not re-run older configs' jobs; the step fills them back in.
RECIPE_OPTIONAL: dict[str, Any] = {"gradient_checkpointing": False, "sogclr_gamma": 0.9, "negative_filter": None}


def job_recipe(recipe: dict) -> dict:
    """The recipe as a train job's parameter: keys in RECIPE_OPTIONAL at their default left out."""
    return {k: v for k, v in recipe.items() if RECIPE_OPTIONAL.get(k, object()) != v}


TRAINING_DEFAULTS: dict[str, Any] = {k: v for k, v in defaults(Recipe).items()
                                     if k not in ("method", "encoder", "pairs")}


# ----------------------------------------------------------------------------- config sections
@dataclass
class MLflowSection:
    enabled: bool = True
    store: str = "results/mlflow.db"


@dataclass
class DatasetSection:
    """One entry of the config's `datasets:`. The `dpr` source's keys map one to one onto
    `python -m pipeline.sources.prepare --source dpr` flags (rules/common.smk `dataset_args`); each file is a
    path (relative to the working directory) or an http(s) URL. `protocol: None` resolves by
    source (`default_protocol`)."""

    source: str = "embedded"
    train_split: str = "train"
    test_split: str = "test"
    protocol: str | None = None          # None: answers for source dpr, qrels otherwise
    # source: dpr (all optional; `dpr_dataset` fills in the official URL of every file not given)
    dpr_dataset: str | None = None       # nq | trivia | webq | curatedtrec
    train: str | None = None             # DPR training JSON (.json[.gz])   -> --dpr-train
    tevatron_train: str | None = None    # Tevatron training JSONL          -> --tevatron-train
    qa: dict | None = None               # {split: QA file}                 -> --dpr-qa split=FILE
    passages: str | None = None          # passages TSV                     -> --dpr-passages
    answer_regex: bool | None = None     # None: on for curatedtrec only    -> --[no-]answer-regex
    positives: str = "first"             # first | all                      -> --dpr-positives
    # Where the hard negatives of runs that ask for them come from on this dataset: None keeps
    # each run's `hard_negatives.source`; bm25 / dataset override it (e.g. MS MARCO in a grid
    # whose runs train with the DPR files' own negatives).
    hard_negatives: str | None = None
    # Evaluate the models (and index) of another dataset entry on this entry's `test_split`, e.g.
    # MS MARCO dev next to TREC-DL 2019: no data, training or index jobs of its own; every other
    # key defaults to that entry's.
    models_of: str | None = None
    # Evaluate the models trained on another dataset entry on this entry's own corpus and
    # `test_split` (transfer, BEIR's zero-shot protocol): data and index jobs of its own, no training.
    trained_on: str | None = None
    # {size | fraction, seed, name}: the data step moves that many train queries into their own
    # qrels split (default name `dev`) and records which in the manifest (pipeline.sources.dev_split).
    dev_split: dict | None = None


DEV_SPLIT_NAME = "dev"


DPR_DATASET_KEYS = ("dpr_dataset", "train", "tevatron_train", "qa", "passages", "answer_regex", "positives")


def default_protocol(source: str) -> str:
    """The evaluation protocol of a dataset that names none: DPR-format data is scored by answer
    accuracy (its QA splits have answers, not judged passages), everything else by its qrels."""
    return "answers" if source == "dpr" else "qrels"


__all__ = ["ZERO_SHOT", "TRAINING_DEFAULTS", "EncoderParams", "Recipe", "HardNegativeParams",
           "FANoiseParams", "PairParams", "CropParams", "NegativeFilterParams", "GUIDE_SELF", "MARGIN_TYPES",
           "check_negative_filter", "guide_problem",
           "MLflowSection", "DatasetSection", "DEV_SPLIT_NAME",
           "DPR_DATASET_KEYS", "default_protocol",
           "resolve_recipe", "defaults", "merged",
           "check_keys", "check_int", "check_number", "check_choice", "as_list"]
