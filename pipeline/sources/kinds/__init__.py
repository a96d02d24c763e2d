"""Dataset sources, one module each: the values of `python -m pipeline.sources.prepare --source`.
Modules here register a `Source` class with `@register_source("name")`; every module is imported
on first lookup, so adding a source is one new file plus its options in the CLI's parser."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pipeline.core.registry import Registry

if TYPE_CHECKING:
    from .base import Source

_REGISTRY = Registry(__name__, "source", "--source", lambda cls, name: setattr(cls, "name", name))
register_source = _REGISTRY.register


def get_source(name: str) -> "type[Source]":
    return _REGISTRY.get(name)


def all_sources() -> "list[type[Source]]":
    """Every registered source, in the order `--help` lists them."""
    return sorted((_REGISTRY.get(n) for n in _REGISTRY.names()), key=lambda cls: cls.listed)


__all__ = ["all_sources", "get_source", "register_source"]
