"""The model card (README.md) of an exported model, in the Hugging Face model-card format: YAML
metadata (base model, library, tags, datasets, model-index with every evaluated metric) and a
markdown body (how to load it, the method and its recipe, training cost, the evaluation table,
provenance). Everything is read from the run's own files (train_summary.json, metrics.json,
manifest.json, the resolved recipe); nothing is typed by hand, so the card cannot drift from the
results it describes.
"""

from __future__ import annotations

import json

import yaml
from pipeline.training.methods import get_method
from pipeline.core.params import ZERO_SHOT

# metrics.json keys -> the model-index metric type the Hub understands (ndcg@10 -> ndcg_at_10).
SKIP_ROW_KEYS = ("scoring", "lambda", "index", "repeats")


def metric_type(key: str) -> str:
    return key.replace("@", "_at_")


def scoring_label(row: dict) -> str:
    lam = row.get("lambda")
    return row["scoring"] if lam is None else f"{row['scoring']}@{lam:g}"


def metric_keys(rows: list[dict]) -> list[str]:
    """The metric columns of metrics.json rows, in their order, without the spreads of sampled scorings."""
    keys = dict.fromkeys(k for row in rows for k in row if k not in SKIP_ROW_KEYS and not k.endswith("_std"))
    return list(keys)


def model_index(job, name: str) -> list[dict]:
    """One model-index result per evaluated dataset x seed; each metric carries its scoring in
    `config` (dot, dn@0.25, dn*@0.25) and the exact value of metrics.json."""
    results = []
    for (dataset, seed), metrics in sorted(job.metrics.items()):
        entries = []
        for row in metrics["rows"]:
            for key in metric_keys([row]):
                entries.append({"type": metric_type(key), "value": row[key], "name": f"{key} ({scoring_label(row)})",
                                "config": scoring_label(row)})
        results.append({"task": {"type": "retrieval", "name": "Retrieval"},
                        "dataset": {"name": dataset, "type": dataset, "split": metrics.get("split", "test"),
                                    "config": f"seed{seed}"},
                        "metrics": entries})
    return [{"name": name, "results": results}]


def front_matter(job, info: dict) -> dict:
    method = job.recipe["method"]
    meta = {}
    if info.get("base_model"):
        meta["base_model"] = info["base_model"]
    meta.update({
        "library_name": "sentence-transformers",
        "pipeline_tag": "sentence-similarity",
        "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "dense-retrieval",
                 "infonce", f"method-{method}"],
        "datasets": sorted({d for d, _ in job.metrics} | {job.dataset}),
        "metrics": sorted({metric_type(k) for m in job.metrics.values() for k in metric_keys(m["rows"])}),
        "model-index": model_index(job, f"{job.run}-{job.tag}"),
    })
    return meta


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
           ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.5f}".rstrip("0").rstrip(".") if abs(value) < 1000 else f"{value:.1f}"
    return "–" if value is None else str(value)


def usage_section(info: dict, one_tower: bool) -> list[str]:
    spec = info["spec"]
    layout = ("one Transformer (tied towers) → Pooling" if one_tower else
              "a Router with a `query` route and a `document` route (untied towers: one Transformer each) → Pooling")
    return [
        "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
        "model = SentenceTransformer(\"path/to/this/folder\")",
        "q = model.encode_query([\"how do tides form\"])",
        "d = model.encode_document([title + \" \" + text for title, text in docs])  # title and text joined by a space",
        "scores = model.similarity(q, d)  # dot product", "```", "",
        f"Architecture: {layout}" + (" → Normalize" if spec["normalize"] else "") + f". Pooling: {spec['pooling']}"
        f"; L2-normalised: {str(spec['normalize']).lower()}; similarity: dot product (the pipeline's inner-product "
        f"search); max length: {spec['query_max_length']} tokens for queries, {spec['passage_max_length']} for "
        "documents (`encode_query` / `encode_document` apply them; plain `encode` uses the document route and "
        "length). Prompts: none (the pipeline encodes raw text). A passage is its title and text joined by a "
        "space, the BEIR / MTEB convention.", ""]


def training_section(job) -> list[str]:
    recipe, summary = job.recipe, job.train_summary
    method = recipe["method"]
    if method == ZERO_SHOT:
        return ["## Training", "", f"Not trained: the zero-shot base model `{recipe['encoder']['model']}`, exported "
                "as the pipeline encodes it.", ""]
    doc = (get_method(method).__doc__ or "").strip().split("\n\n")[0]
    flat = {k: v for k, v in recipe.items() if k != "encoder"}
    lines = ["## Training", "", f"Method: **{method}** (run `{job.run}`, seed {job.seed}, trained on `{job.dataset}`).",
             "", doc, "",
             f"N_total (examples per update): {summary.get('n_total', summary.get('examples_per_update'))}; "
             f"bank size: {summary.get('memory_size', 0)}; seed: {job.seed}.", "", "Training cost:", ""]
    lines += _table(["updates", "seconds", "s / update", "peak memory (MB)", "device"],
                    [[summary.get("steps"), _fmt(summary.get("seconds")), _fmt(summary.get("sec_per_update")),
                      _fmt(summary.get("peak_mem_mb")), summary.get("device", "–")]])
    lines += ["", "Recipe (resolved, as the training step received it):", "", "```json",
              json.dumps(flat, indent=1, sort_keys=True, default=str), "```", "",
              "Encoder:", "", "```json", json.dumps(recipe["encoder"], indent=1, sort_keys=True), "```", ""]
    return lines


def evaluation_section(job) -> list[str]:
    lines = ["## Evaluation", "", "Every scoring the pipeline evaluated (metrics.json), dense retrieval over the "
             "whole corpus (dot: plain inner product; dn: Distribution Normalization; dn*: DN with means drawn from "
             "a sample, mean over repeats).", ""]
    for (dataset, seed), metrics in sorted(job.metrics.items()):
        keys = metric_keys(metrics["rows"])
        lines += [f"### {dataset}, {metrics.get('split', 'test')} split, seed {seed} "
                  f"({metrics.get('num_queries', '?')} queries, {metrics.get('num_docs', '?')} documents)", ""]
        lines += _table(["scoring", "index", *keys],
                        [[scoring_label(r), r.get("index", "–"), *(_fmt(r.get(k)) for k in keys)]
                         for r in metrics["rows"]])
        lines.append("")
    return lines


def provenance_section(job, info: dict) -> list[str]:
    lines = ["## Provenance", "", f"- code commit: `{job.code_commit}`",
             f"- config: `{job.config_file or '–'}` (sha256 `{job.config_sha256 or '–'}`)",
             f"- resolved recipe sha256: `{job.recipe_sha256}`",
             f"- exported from `{info['source_model']}`; max |difference| from the pipeline's own embeddings on "
             f"probe texts: {info['max_abs_diff_vs_pipeline']:.1e}"]
    for dataset, manifest in sorted(job.manifests.items()):
        sums = {**manifest.get("input_sha256", {}), **({"zip": manifest["zip_sha256"]} if "zip_sha256" in manifest
                                                       else {})}
        out = manifest.get("output_sha256", {})
        lines.append(f"- dataset `{dataset}` (source {manifest.get('source', '?')}, counts "
                     f"{json.dumps(manifest.get('counts', {}), sort_keys=True)}):")
        lines += [f"  - input `{name}` sha256 `{digest}`" for name, digest in sorted(sums.items())]
        lines += [f"  - normalised `{name}` sha256 `{digest}`" for name, digest in sorted(out.items())]
    return lines + [""]


def model_card(job, info: dict) -> str:
    """README.md of the export: YAML front matter, then the markdown body."""
    header = yaml.safe_dump(front_matter(job, info), sort_keys=False, allow_unicode=True)
    title = f"# {job.run} ({job.tag}): dense retriever from `{job.recipe['encoder']['model']}`"
    body = [title, "", "Generated by `python -m pipeline.export.export` from this run's files; do not edit by hand.", ""]
    body += usage_section(info, info["layout"] == "transformer")
    body += training_section(job) + evaluation_section(job) + provenance_section(job, info)
    return f"---\n{header}---\n\n" + "\n".join(body)


def read_front_matter(text: str) -> dict:
    """The YAML metadata of a model card (what the Hub parses)."""
    if not text.startswith("---\n"):
        raise ValueError("model card: no YAML front matter")
    end = text.index("\n---\n", 4)
    return yaml.safe_load(text[4:end])
