"""Training methods, one module each. Modules in this package register themselves with
`@register("name")`; every module here is imported on first lookup, so adding a method is one
new file plus a run entry in a config."""

from __future__ import annotations

import ast
from pathlib import Path

from typing import TYPE_CHECKING

from pipeline.sources.datasets import Example
from pipeline.core.registry import Registry

if TYPE_CHECKING:
    from .base import TrainingMethod

_REGISTRY = Registry(__name__, "training method", "method", lambda cls, name: setattr(cls, "name", name))
register = _REGISTRY.register


def available() -> list[str]:
    """Registered method names, read from the `@register("...")` decorators without importing
    the modules, so config validation (every `snakemake -n`) does not import torch."""
    names = set(_REGISTRY.classes)
    for path in Path(__path__[0]).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register" and deco.args \
                            and isinstance(deco.args[0], ast.Constant):
                        names.add(deco.args[0].value)
    return sorted(names)


def get_method(name: str) -> "type[TrainingMethod]":
    return _REGISTRY.get(name)


def __getattr__(name: str):
    # The interface imports torch: load it only when asked for, so listing method names (config
    # validation, `snakemake -n`) stays torch-free.
    if name == "TrainingMethod":
        from .base import TrainingMethod

        return TrainingMethod
    raise AttributeError(name)


__all__ = ["Example", "TrainingMethod", "available", "get_method", "register"]
