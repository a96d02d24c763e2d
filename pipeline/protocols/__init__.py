"""Evaluation protocols: how one ranking of documents per query becomes metrics.

A protocol owns the evaluated queries of a split and turns `{qid: {docid: score}}` into
aggregate metrics plus one per-query value (what the significance tests compare). Modules in
this package register themselves with `@register_protocol("name")` and are imported on first
lookup, so a new protocol is one new file plus the dataset's `protocol:` key in a config.
"""

from __future__ import annotations

import importlib
import pkgutil

from ..common import PipelineError
from .base import EvalProtocol

_REGISTRY: dict[str, type[EvalProtocol]] = {}


def register_protocol(name: str):
    def wrap(cls: type[EvalProtocol]) -> type[EvalProtocol]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def available_protocols() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get_protocol(name: str) -> type[EvalProtocol]:
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PipelineError(f"protocol: unknown evaluation protocol {name!r}; "
                            f"expected one of {sorted(_REGISTRY)}") from None


__all__ = ["EvalProtocol", "available_protocols", "get_protocol", "register_protocol"]
