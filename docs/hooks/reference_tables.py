"""MkDocs hooks: the published results under results/reference/ reach the site from their own
files, so a table in the docs can never drift from the table the pipeline wrote.

- `<!-- reference: scifact-long/headline.md -->` in a page is replaced, at build time, by that
  file's table and caption (everything from its first table row on).
- every PNG under results/reference/ is served at reference/<name>/<plot>.png.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

REFERENCE = Path(__file__).resolve().parents[2] / "results" / "reference"
MARKER = re.compile(r"<!-- reference: (?P<path>[\w./-]+) -->")


def table_of(path: Path) -> str:
    """The table and caption of a published markdown file, without its headings."""
    lines = path.read_text().splitlines()
    first_row = next((i for i, line in enumerate(lines) if line.startswith("|")), None)
    if first_row is None:
        raise PluginError(f"{path}: no table in this published file")
    return "\n".join(lines[first_row:]).strip() + "\n"


def on_page_markdown(markdown: str, page, config, files) -> str:
    def expand(match: re.Match) -> str:
        path = REFERENCE / match.group("path")
        if not path.is_file():
            raise PluginError(f"{page.file.src_path}: {match.group(0)} names {path}, which does not exist")
        return table_of(path)

    return MARKER.sub(expand, markdown)


def on_files(files, config):
    for png in sorted(REFERENCE.glob("*/*.png")):
        files.append(File.generated(config, f"reference/{png.parent.name}/{png.name}", abs_src_path=str(png)))
    return files
