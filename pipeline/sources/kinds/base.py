"""The interface every dataset source implements: which CLI options are its own, whether it can
carve a dev split, and how it turns the parsed options into a normalised folder."""

from __future__ import annotations

import argparse


class Source:
    name = ""                        # the `--source` value, set by @register_source
    listed = 0                       # position among the --source choices in --help
    flags: tuple[str, ...] = ()      # argparse dests of the options only this source uses
    dev_split_refusal: str | None = None   # why --dev-split is refused, for a source that refuses it

    @classmethod
    def misused_flags(cls, args: argparse.Namespace) -> str | None:
        """The problem when this source's own options are given with another --source."""
        given = [f for f in cls.flags if getattr(args, f)]
        if not given:
            return None
        names = "/".join(f"--{f.replace('_', '-')}" for f in cls.flags)
        verb = "are" if len(cls.flags) > 1 else "is"
        return f"{names} {verb} only used with --source {cls.name} (got --source {args.source})"

    def prepare(self, name: str, out: str, args: argparse.Namespace, dev_split: dict | None) -> dict:
        """Write the normalised folder `out` for dataset `name`; return its manifest."""
        raise NotImplementedError
