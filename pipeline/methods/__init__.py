"""Training methods, one module each. Modules in this package register themselves with
`@register("name")`; every module here is imported on first lookup, so adding a method is one
new file plus a run entry in a config."""

from __future__ import annotations

import importlib
import pkgutil

from ..common import PipelineError
from .base import Example, TrainingMethod

_REGISTRY: dict[str, type[TrainingMethod]] = {}


def register(name: str):
    def wrap(cls: type[TrainingMethod]) -> type[TrainingMethod]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _import_all() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def available() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get_method(name: str) -> type[TrainingMethod]:
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PipelineError(f"method: unknown training method {name!r}; expected one of {sorted(_REGISTRY)}") from None


__all__ = ["Example", "TrainingMethod", "available", "get_method", "register"]
