"""Evaluation protocols: how one ranking of documents per query becomes metrics.

A protocol owns the evaluated queries of a split and turns `{qid: {docid: score}}` into
aggregate metrics plus one per-query value (what the significance tests compare). Modules in
this package register themselves with `@register_protocol("name")` and are imported on first
lookup, so a new protocol is one new file plus the dataset's `protocol:` key in a config.
"""

from __future__ import annotations

from pipeline.core.registry import Registry
from .base import EvalProtocol, metric_label

_REGISTRY = Registry(__name__, "evaluation protocol", "protocol", lambda cls, name: setattr(cls, "name", name))
register_protocol = _REGISTRY.register


def available_protocols() -> list[str]:
    return sorted(_REGISTRY.names())


def get_protocol(name: str) -> type[EvalProtocol]:
    return _REGISTRY.get(name)


__all__ = ["EvalProtocol", "available_protocols", "get_protocol", "metric_label", "register_protocol"]
