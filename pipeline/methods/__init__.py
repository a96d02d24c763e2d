"""Training methods, one module each. Modules in this package register themselves with
`@register("name")`; every module here is imported on first lookup, so adding a method is one
new file plus a run entry in a config."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

from ..common import PipelineError
from ..datasets import Example
from .base import TrainingMethod

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
    """Registered method names, read from the `@register("...")` decorators without importing
    the modules, so config validation (every `snakemake -n`) does not import torch."""
    names = set(_REGISTRY)
    for path in Path(__path__[0]).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register" and deco.args \
                            and isinstance(deco.args[0], ast.Constant):
                        names.add(deco.args[0].value)
    return sorted(names)


def get_method(name: str) -> type[TrainingMethod]:
    _import_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise PipelineError(f"method: unknown training method {name!r}; expected one of {sorted(_REGISTRY)}") from None


__all__ = ["Example", "TrainingMethod", "available", "get_method", "register"]
