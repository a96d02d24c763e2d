"""One registry pattern for every extension point (training methods, scorings, evaluation
protocols): a package whose modules register classes with a decorator, imported on first
lookup, so a new entry is one new file plus a config value."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from pipeline.core.common import PipelineError


class Registry:
    """Classes registered under a name. `package` is the dotted package whose modules (all but
    `base`) are imported before any lookup; `kind` and `key` word the error for an unknown name;
    `on_register(cls, name)` stores the name on the class."""

    def __init__(self, package: str, kind: str, key: str, on_register: Callable[[type, str], None]):
        self.package, self.kind, self.key = package, kind, key
        self.on_register = on_register
        self.classes: dict[str, type] = {}
        self._imported = False

    def register(self, name: str):
        def wrap(cls):
            earlier = self.classes.get(name)
            # The same class met again (a module imported twice) is harmless; a second class
            # under one name would silently replace the first.
            if earlier is not None and (earlier.__module__, earlier.__qualname__) != (cls.__module__, cls.__qualname__):
                raise PipelineError(f"{self.kind} {name!r} is registered twice: by "
                                    f"{earlier.__module__}.{earlier.__qualname__} and {cls.__module__}.{cls.__qualname__}")
            self.on_register(cls, name)
            self.classes[name] = cls
            return cls

        return wrap

    def import_all(self) -> None:
        if self._imported:
            return
        package = importlib.import_module(self.package)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name != "base":
                importlib.import_module(f"{self.package}.{info.name}")
        self._imported = True

    def names(self) -> list[str]:
        self.import_all()
        return list(self.classes)

    def get(self, name: str) -> type:
        self.import_all()
        try:
            return self.classes[name]
        except KeyError:
            raise PipelineError(f"{self.key}: unknown {self.kind} {name!r}; expected one of "
                                f"{sorted(self.classes)}") from None


def lookup(target: str):
    """The object named by `target` ("package.module:name"), its module imported on first use: how
    core code (config validation) reaches a stage's registered names and section checks without
    importing a stage package, so no layer below a stage depends on it at import time."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)
