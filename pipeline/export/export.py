"""Export step: a model this pipeline trained (or its zero-shot base) as a sentence-transformers
folder that `SentenceTransformer(path)` loads offline with no extra code, with a model card.

    tied towers (and every zero-shot model):  Transformer -> Pooling -> (Normalize)
    untied towers:  Router{query: Transformer_q, document: Transformer_d} -> Pooling -> (Normalize)

The pipeline's encoding choices travel with the folder: mean or [CLS] pooling, L2 normalisation,
the query and passage max lengths (the Transformer's `query_length` / `document_length`, which
`encode_query` / `encode_document` apply), the dot product as similarity, and no prompts (the
pipeline encodes raw text). Passages are encoded as title and text joined by a space, the BEIR and
MTEB convention (pipeline.sources.datasets.passage_text); the card says so.

Before the folder is swapped in, it is loaded back and its embeddings of a few probe texts are
compared with the pipeline's own (max |diff| <= 1e-5), so a folder that would encode differently
is never published. The whole folder is built under a temporary name and renamed into place.

    python -m pipeline.export.export --config config/scifact.yaml --run contaccum-8x8 --seed 13
    python -m pipeline.export.export --config config/scifact.yaml --run zeroshot
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError, atomic_dir, atomic_write_json, git_commit, log, read_json, run_main, sha256_file
from pipeline.core.layout import EXPORT_INFO, MODEL, Layout, ZERO_SHOT_TAG
from pipeline.export.model_card import model_card
from pipeline.models.encoder_shape import MINILM_ALIASES as _MINILM_ALIASES

TOLERANCE = 1e-5
HUB_MINILM = "sentence-transformers/all-MiniLM-L6-v2"
# Probe texts for the check before publishing: short, long (past every max length), and odd input.
PROBES = ("what causes tides", "",
          "Mitochondria are the powerhouse of the cell. " * 60,
          "Ünïcödé tëxt, numbers 12345 and punctuation?!")


@dataclass
class ExportJob:
    """One model to export and the run files its card is generated from."""

    dataset: str
    run: str
    tag: str
    model_dir: Path
    train_summary: dict
    recipe: dict
    metrics: dict[tuple[str, int], dict] = field(default_factory=dict)   # (eval dataset, seed) -> metrics.json
    manifests: dict[str, dict] = field(default_factory=dict)             # dataset -> manifest.json
    config_file: str | None = None
    config_sha256: str | None = None
    recipe_sha256: str = ""
    code_commit: str = ""

    @property
    def seed(self) -> int | None:
        return int(self.tag[4:]) if self.tag.startswith("seed") else None


# ----------------------------------------------------------------------------- resolving a run
def resolve_job(cfg: dict, results: Path, run: str, seed: int | None, dataset: str | None = None,
                config_file: str | None = None) -> ExportJob:
    """The export of `run` x `seed` of the grid `cfg` whose outputs are under `results`; every
    missing piece (unknown run, seed or dataset, a run that has not trained or not been
    evaluated) is a PipelineError that says what to do."""
    if run not in cfg["runs"]:
        raise PipelineError(f"--run: unknown run {run!r}; the config has {sorted(cfg['runs'])}")
    own = [d for d in cfg["datasets"] if pcfg.model_dataset(cfg, d) == d]
    if dataset is None:
        if len(own) != 1:
            raise PipelineError(f"--dataset: the config trains on several datasets {own}; name one")
        dataset = own[0]
    elif dataset not in own:
        raise PipelineError(f"--dataset: {dataset!r} is not a dataset this config trains on; expected one of {own}")
    trained = pcfg.is_trained(cfg, run)
    if trained and seed is None:
        raise PipelineError(f"--seed: run {run!r} is trained; name one of its seeds {cfg['seeds']}")
    if seed is not None and seed not in cfg["seeds"]:
        raise PipelineError(f"--seed: unknown seed {seed}; the config has seeds {cfg['seeds']}")
    layout = Layout.for_config(cfg, results)
    tag = pcfg.model_tag(cfg, run, seed if seed is not None else cfg["seeds"][0])
    summary_path = layout.train_summary(dataset, run, tag)
    if not summary_path.is_file():
        raise PipelineError(f"{summary_path}: not found: run {run!r} ({tag}) has not trained on {dataset}; "
                            "run the grid (snakemake) first")
    seeds = [seed] if trained else list(cfg["seeds"])
    evaluated_on = [d for d in cfg["datasets"] if pcfg.model_dataset(cfg, d) == dataset]
    metrics = {}
    for ds in evaluated_on:
        for s in seeds:
            path = layout.metrics(ds, run, s)
            if not path.is_file():
                raise PipelineError(f"{path}: not found: run {run!r} seed {s} has not been evaluated on {ds}; "
                                    "the model card needs its evaluation, so run the grid (snakemake) first")
            metrics[(ds, s)] = read_json(path)
    recipe = pcfg.recipe(cfg, run, dataset)
    manifests = {ds: read_json(layout.manifest(ds)) for ds in dict.fromkeys([dataset, *evaluated_on])
                 if layout.manifest(ds).is_file()}
    return ExportJob(dataset=dataset, run=run, tag=tag, model_dir=layout.model(dataset, run, tag) / MODEL,
                     train_summary=read_json(summary_path), recipe=recipe, metrics=metrics, manifests=manifests,
                     config_file=config_file,
                     config_sha256=sha256_file(config_file) if config_file and Path(config_file).is_file() else None,
                     recipe_sha256=hashlib.sha256(pcfg.to_json(recipe).encode()).hexdigest(),
                     code_commit=git_commit())


def check_model_folder(model_dir: Path) -> dict:
    """The folder's bi_encoder.json, after checking every file that loading it needs is there
    (naming the first one missing), so an interrupted copy fails here and not deep in transformers."""
    spec_path = model_dir / "bi_encoder.json"
    if not model_dir.is_dir():
        raise PipelineError(f"{model_dir}: model folder not found")
    if not spec_path.is_file():
        raise PipelineError(f"{model_dir}: incomplete model folder (missing bi_encoder.json)")
    meta = read_json(spec_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("spec"), dict):
        raise PipelineError(f"{spec_path}: expected an object with a 'spec' object")
    if meta.get("weights") == "base":
        return meta
    towers = ["query"] if meta["spec"].get("tied", True) else ["query", "passage"]
    for tower in towers:
        folder = model_dir / tower
        if not (folder / "config.json").is_file():
            raise PipelineError(f"{model_dir}: incomplete model folder (missing {tower}/config.json)")
        if not any((folder / name).is_file() for name in ("model.safetensors", "pytorch_model.bin")) and \
                not any(folder.glob("model-*.safetensors")):
            raise PipelineError(f"{model_dir}: incomplete model folder (no weights in {tower}/)")
    if not (model_dir / "tokenizer").is_dir() or not any((model_dir / "tokenizer").glob("tokenizer*")):
        raise PipelineError(f"{model_dir}: incomplete model folder (missing tokenizer/)")
    return meta


# ----------------------------------------------------------------------------- building the model
def base_model_id(name: str, random_init: bool = False) -> str | None:
    """The Hugging Face id of the model training started from, when it has one (a local folder,
    or the architecture with fresh weights, has none)."""
    if random_init:
        return None
    if name in _MINILM_ALIASES:
        return HUB_MINILM
    if Path(name).expanduser().exists() or name.startswith((".", "/", "~")):
        return None
    return name


def single_tower(model, meta: dict) -> bool:
    """Tied towers, or a zero-shot model (both towers are the same base weights)."""
    return model.spec.tied or model.query_model is model.passage_model or meta.get("weights") == "base"


def to_sentence_transformer(model, workdir: Path, one_tower: bool):
    """The BiEncoder as an in-memory SentenceTransformer (towers staged as HF folders in `workdir`)."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Router, Transformer

    spec = model.spec
    lengths = {"query_length": spec.query_max_length, "document_length": spec.passage_max_length}

    def transformer(tower, name: str, max_length: int):
        folder = workdir / name
        tower.save_pretrained(folder)
        model.tokenizer.save_pretrained(folder)
        return Transformer(str(folder), max_seq_length=max_length, **lengths)

    if one_tower:
        first = transformer(model.query_model, "tower", max(lengths.values()))
    else:
        # A plain `encode()` (no task) takes the document route, as the card says.
        first = Router.for_query_document(
            query_modules=[transformer(model.query_model, "query", spec.query_max_length)],
            document_modules=[transformer(model.passage_model, "document", spec.passage_max_length)],
            default_route="document")
    modules = [first, Pooling(model.embedding_dim, pooling_mode=spec.pooling)]
    if spec.normalize:
        modules.append(Normalize())
    # The pipeline ranks by inner product (FAISS IP); on normalised embeddings it equals cosine.
    return SentenceTransformer(modules=modules, similarity_fn_name="dot", device="cpu")


def max_difference(model, exported) -> float:
    """Largest |difference| between the pipeline's and the exported model's embeddings of the probes."""
    import numpy as np

    worst = 0.0
    for side, encode in (("query", exported.encode_query), ("passage", exported.encode_document)):
        ours = model.encode_texts(list(PROBES), side, progress=False)
        theirs = encode(list(PROBES), convert_to_numpy=True, batch_size=len(PROBES))
        worst = max(worst, float(np.abs(ours - theirs).max()))
    return worst


def export(job: ExportJob, out: str | Path) -> Path:
    """Write the sentence-transformers folder of `job` to `out` (atomically: an existing export is
    replaced only by a complete, checked one)."""
    from sentence_transformers import SentenceTransformer

    from pipeline.models.encoder import BiEncoder  # why: loads torch; kept out of this module's import

    out = Path(out)
    meta = check_model_folder(job.model_dir)
    model = BiEncoder.load(job.model_dir).eval()
    one_tower = single_tower(model, meta)
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix=".stage-", dir=out.parent) as stage:
        to_sentence_transformer(model, Path(stage), one_tower).save(str(tmp))
        diff = max_difference(model, SentenceTransformer(str(tmp), device="cpu", local_files_only=True))
        if diff > TOLERANCE:
            raise PipelineError(f"{job.model_dir}: the exported model encodes differently from the pipeline "
                                f"(max |diff| {diff:.2e} > {TOLERANCE:g}); nothing was written to {out}")
        info = {"dataset": job.dataset, "run": job.run, "tag": job.tag, "seed": job.seed,
                "source_model": str(job.model_dir), "layout": "transformer" if one_tower else "router",
                "spec": asdict(model.spec), "base_model": base_model_id(model.spec.model, bool(meta["spec"].get("random_init"))),
                "max_abs_diff_vs_pipeline": diff, "code_commit": job.code_commit,
                "config_file": job.config_file, "config_sha256": job.config_sha256,
                "recipe_sha256": job.recipe_sha256}
        atomic_write_json(tmp / EXPORT_INFO, info)
        (tmp / "README.md").write_text(model_card(job, info), encoding="utf-8")
    log.info("exported %s (%s) to %s; max |diff| vs the pipeline %.1e", job.model_dir, info["layout"], out, diff)
    return out


# ----------------------------------------------------------------------------- entry point
def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m pipeline.export.export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="experiment config YAML the run was trained with")
    group.add_argument("--config-json", help="validated config as JSON (what the Snakemake rule passes)")
    parser.add_argument("--config-file", action="append", default=[],
                        help="with --config-json: the config file it came from, hashed into the card (the last one "
                             "when repeated, as Snakemake lets the last file win)")
    parser.add_argument("--run", required=True, help="run name (a key of the config's runs:)")
    parser.add_argument("--seed", type=int, help="seed of a trained run (a zero-shot run needs none)")
    parser.add_argument("--dataset", help="dataset the run trained on (default: the config's only one)")
    parser.add_argument("--results", default="results", help="results folder (default: results)")
    parser.add_argument("--out", help="export folder (default: <results>/<experiment>/export/<dataset>/<run>/<tag>)")
    args = parser.parse_args(argv)
    if args.config:
        cfg, config_file = pcfg.load(args.config), args.config
    else:
        cfg = pcfg.validate(json.loads(args.config_json))
        config_file = args.config_file[-1] if args.config_file else None
    job = resolve_job(cfg, Path(args.results), args.run, args.seed, args.dataset, config_file)
    out = Path(args.out) if args.out else Layout.for_config(cfg, args.results).export(job.dataset, job.run, job.tag)
    export(job, out)
    print(f"exported {job.run} ({job.tag}) to {out}; load it with SentenceTransformer({str(out)!r})")
    return out


__all__ = ["ExportJob", "export", "resolve_job", "check_model_folder", "ZERO_SHOT_TAG"]

if __name__ == "__main__":
    run_main(main)
