"""The documentation: README stays a front page, its headline table cannot drift from the
published file, the MkDocs site builds with --strict (a broken link fails it), and every config
snippet in the docs is a valid config."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO

from pipeline.core import config as pcfg

MKDOCS = [sys.executable, "-m", "mkdocs"]
DOC_PAGES = sorted((REPO / "docs").rglob("*.md"))


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_is_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; the manual belongs in docs/"
    assert "make run" in (REPO / "README.md").read_text() and "make test" in (REPO / "README.md").read_text()


def first_table(text: str) -> list[str]:
    """The rows of the first pipe table in `text` (a headline file holds one table per dataset)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_readme_headline_equals_the_published_table():
    published = first_table((REPO / "results/reference/separation/headline.md").read_text())
    assert first_table((REPO / "README.md").read_text()) == published, \
        "README's headline table drifted from the SciFact table of results/reference/separation/headline.md: copy it again"


def test_readme_pilot_table_equals_the_published_table():
    published = table_rows((REPO / "results/reference/separation-pilot/pilot.md").read_text())
    readme = "\n".join(table_rows((REPO / "README.md").read_text()))
    assert "\n".join(published) in readme, \
        "README's pilot table drifted from results/reference/separation-pilot/pilot.md: copy it again"


def test_readme_links_point_at_existing_files():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", (REPO / "README.md").read_text()):
        if not target.startswith("http"):
            assert (REPO / target).exists(), f"README.md links to {target}, which does not exist"


def build_site(config_dir: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*MKDOCS, "build", "--strict", "--site-dir", str(out)], cwd=config_dir,
                          capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": ""})


def test_site_builds_strict_with_reference_tables(tmp_path):
    result = build_site(REPO, tmp_path / "site")
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "site/results/scifact/index.html").read_text()
    first_row = table_rows((REPO / "results/reference/scifact-long/headline.md").read_text())[2]
    run_name = first_row.split("|")[1].strip()
    assert f"<td>{run_name}</td>" in page, "the published long-grid table did not reach the results page"
    assert (tmp_path / "site/reference/gradnorm/grad_norm_ratio.png").is_file()


def test_broken_link_fails_the_strict_build(tmp_path):
    copy_root = tmp_path / "repo"
    shutil.copytree(REPO / "docs", copy_root / "docs")
    shutil.copytree(REPO / "results/reference", copy_root / "results/reference")
    shutil.copy(REPO / "mkdocs.yml", copy_root / "mkdocs.yml")
    page = copy_root / "docs/testing.md"
    page.write_text(page.read_text() + "\nSee [a page that is not there](no-such-page.md).\n")
    result = build_site(copy_root, tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stderr


def yaml_blocks(text: str) -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", text, flags=re.S)


def merged(base: dict, snippet: dict) -> dict:
    """A snippet's datasets replace the default ones; its other sections (runs too) add keys."""
    out = copy.deepcopy(base)
    for key, value in snippet.items():
        if key != "datasets" and isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_config_snippets_in_docs_validate(page):
    """Each ```yaml block is merged over the default config and must pass its validation."""
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for block in yaml_blocks(page.read_text()):
        snippet = yaml.safe_load(block)
        config = merged(base, snippet)
        for name, ds in (snippet.get("datasets") or {}).items():
            for key in ("train", "passages", "path"):
                if isinstance(ds.get(key), str) and not (REPO / ds[key]).exists():
                    pytest.fail(f"{page}: dataset {name} names {ds[key]}, which does not exist")
        pcfg.validate(config)
