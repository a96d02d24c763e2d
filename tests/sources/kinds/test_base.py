"""pipeline.sources.kinds.base and the source registry: every source is one registered class,
listed in --help order; a source's own options given with another source are named."""

from __future__ import annotations

import argparse

import pytest

from pipeline.sources.kinds import all_sources, get_source
from pipeline.sources.kinds.base import Source


def test_sources_are_registered_in_help_order():
    assert [cls.name for cls in all_sources()] == ["beir", "local", "embedded", "dpr"]
    assert get_source("local").flags == ("path",)


def test_own_options_with_another_source_are_named():
    beir = get_source("beir")
    given = argparse.Namespace(source="local", url="http://x", sha256=None, md5="m")
    assert beir.misused_flags(given) == "--url/--sha256/--md5 are only used with --source beir (got --source local)"
    assert beir.misused_flags(argparse.Namespace(source="local", url=None, sha256=None, md5=None)) is None
    assert get_source("local").misused_flags(argparse.Namespace(source="dpr", path="p")) == \
        "--path is only used with --source local (got --source dpr)"
    with pytest.raises(NotImplementedError):
        Source().prepare("x", "out", argparse.Namespace(), None)
