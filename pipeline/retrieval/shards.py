"""Sharded corpus encoding (index.shards or index.shard_size): the corpus is split into
consecutive blocks of rows, each encoded by its own Snakemake job, then gathered by the index step.

Scheme (rules/index.smk):
  shard_plan (checkpoint)  manifest.json -> results/shards/<ds>/plan.json: the row range of
                           every shard, from the corpus count the data step recorded and
                           index.shards (N near-equal blocks) or index.shard_size (blocks of that
                           many rows). With `shards` the job count is known up front, so a dry run
                           lists every encode_shard job before any data exists. With
                           `shard_size` it is only known once the data step has run: Snakemake
                           re-evaluates the DAG after the checkpoint, so a dry run shows the shard
                           jobs as soon as the plan exists.
  encode_shard             one job per shard: rows [start, end) of corpus.jsonl (streamed, never
                           the whole corpus) -> <i>.npy (float16/float32) + <i>.json (doc ids),
                           each written atomically, so a killed job leaves no shard behind and
                           a re-run encodes only the missing shards.
  index                    gathers the shards in row order into embeddings.npy (streamed with
                           plain reads and writes: no corpus-sized array in RAM), then builds the
                           FAISS indexes chunk by chunk (pipeline.retrieval.index.write_indexes_streaming).

Row order, doc ids and the embeddings file are those of the unsharded index step, so evaluation
reads either folder the same way.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.core.common import PipelineError, atomic_path, atomic_write_json, log, parse_json_object, read_json, run_main, set_threads
from pipeline.sources.datasets import corpus_digest, passage_text
from pipeline.core.layout import MANIFEST, DOC_IDS, EMBEDDINGS
from pipeline.core.index_params import IndexParams, as_index_params
from pipeline.core.params import check_int, defaults

DTYPES = ("float32", "float16")
ENCODE_BLOCK = 32768  # texts per encode_texts call inside a shard


# ----------------------------------------------------------------------------- plan
def make_plan(num_docs: int, shard_size: int) -> list[list[int]]:
    """[[start, end), ...]: consecutive blocks of `shard_size` rows (the last may be shorter)."""
    if num_docs < 1:
        raise PipelineError("shard plan: the corpus is empty")
    n = math.ceil(num_docs / shard_size)
    return [[i * shard_size, min(num_docs, (i + 1) * shard_size)] for i in range(n)]


def make_plan_count(num_docs: int, shards: int) -> list[list[int]]:
    """[[start, end), ...]: `shards` consecutive blocks whose sizes differ by at most one (empty
    blocks when the corpus has fewer rows than shards)."""
    if num_docs < 1:
        raise PipelineError("shard plan: the corpus is empty")
    return [[i * num_docs // shards, (i + 1) * num_docs // shards] for i in range(shards)]


def write_plan(dataset_dir: str | Path, out: str | Path, shard_size: int | None = None,
               shards: int | None = None) -> dict:
    if (shard_size is None) == (shards is None):
        raise PipelineError("shard plan: give either a shard size or a number of shards")
    if shards is None:
        check_int(shard_size, "index.shard_size")
    else:
        check_int(shards, "index.shards")
    manifest = read_json(Path(dataset_dir) / MANIFEST)
    num_docs = manifest.get("counts", {}).get("docs")
    if not isinstance(num_docs, int):
        raise PipelineError(f"{dataset_dir}/{MANIFEST}: no counts.docs to plan shards from")
    blocks = make_plan(num_docs, shard_size) if shards is None else make_plan_count(num_docs, shards)
    plan = {"num_docs": num_docs, "shard_size": shard_size, "shards": blocks,
            "corpus_sha256": corpus_digest(manifest)}
    atomic_write_json(out, plan)
    log.info("%d docs -> %d shards of up to %d", num_docs, len(blocks), max(end - start for start, end in blocks))
    return plan


def read_plan(path: str | Path) -> dict:
    plan = read_json(path)
    if not isinstance(plan, dict) or not isinstance(plan.get("shards"), list):
        raise PipelineError(f"{path}: not a shard plan (no 'shards' list)")
    return plan


def num_shards(plan_path: str | Path) -> int:
    return len(read_plan(plan_path)["shards"])


# ----------------------------------------------------------------------------- corpus rows
def corpus_rows(dataset_dir: str | Path, start: int, end: int) -> tuple[list[str], list[str]]:
    """(doc ids, passage texts) of rows [start, end) of corpus.jsonl, in file order (the row
    order of `datasets.load_dataset`), reading only up to row `end`."""
    ids, texts, row = [], [], 0
    with open(Path(dataset_dir) / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if row >= start:
                doc = json.loads(line)
                ids.append(str(doc["_id"]))
                texts.append(passage_text({"title": doc.get("title") or "", "text": doc.get("text") or ""}))
            row += 1
            if row >= end:
                break
    if len(ids) != end - start:
        raise PipelineError(f"{dataset_dir}/corpus.jsonl: has {row} documents, the shard plan expects rows "
                            f"[{start}, {end}) (re-run the shard_plan step)")
    return ids, texts


# ----------------------------------------------------------------------------- .npy streaming
def npy_header(path: str | Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, byte offset of the data) of a C-order .npy file, reading only its header."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(fh)
        if fortran:
            raise PipelineError(f"{path}: Fortran-order arrays are not supported")
        return shape, dtype, fh.tell()


def read_rows(path: str | Path, start: int, end: int, header=None) -> np.ndarray:
    """Rows [start, end) of a 2-D .npy file as float32, by plain reads (no memory map, so the file's
    pages stay in the page cache and out of this process's resident set)."""
    shape, dtype, offset = header or npy_header(path)
    dim = shape[1]
    end = min(end, shape[0])
    with open(path, "rb") as fh:
        fh.seek(offset + start * dim * dtype.itemsize)
        out = np.fromfile(fh, dtype=dtype, count=(end - start) * dim).reshape(end - start, dim)
    return out.astype(np.float32, copy=False)


def iter_rows(path: str | Path, chunk: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, float32 block) over a 2-D .npy file, `chunk` rows at a time."""
    header = npy_header(path)
    for start in range(0, header[0][0], chunk):
        yield start, read_rows(path, start, start + chunk, header)


def write_npy_stream(path: str | Path, shape: tuple[int, int], dtype: str, blocks) -> None:
    """Write a 2-D .npy of `shape` from an iterable of row blocks, atomically and without ever
    holding the whole array (plain writes: no dirty memory-mapped pages in the resident set)."""
    dtype = np.dtype(dtype)
    rows = 0
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.lib.format.write_array_header_2_0(fh, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                      "fortran_order": False, "shape": tuple(shape)})
            for block in blocks:
                block = np.ascontiguousarray(block, dtype=dtype)
                if block.ndim != 2 or block.shape[1] != shape[1]:
                    raise PipelineError(f"{path}: block of shape {block.shape} does not fit {shape}")
                fh.write(block.tobytes())
                rows += len(block)
        if rows != shape[0]:
            raise PipelineError(f"{path}: wrote {rows} rows, expected {shape[0]}")


# ----------------------------------------------------------------------------- encode one shard
def encode_shard(model_dir: str, dataset_dir: str, plan_path: str, shard: int, out_embeddings: str, out_ids: str,
                 params: dict | IndexParams) -> dict:
    p = as_index_params(params)
    plan = read_plan(plan_path)
    if not 0 <= shard < len(plan["shards"]):
        raise PipelineError(f"--shard: {shard} is not in the plan's {len(plan['shards'])} shards ({plan_path})")
    start, end = plan["shards"][shard]
    ids, texts = corpus_rows(dataset_dir, start, end)
    from pipeline.models.encoder import BiEncoder, describe  # why: loads torch; kept out of this module's import

    set_threads()
    model = BiEncoder.load(model_dir)
    log.info("shard %d: encoding rows [%d, %d) with %s", shard, start, end, describe(model))
    t0 = time.perf_counter()
    # encode_texts tokenises all its texts up front; blocks of ENCODE_BLOCK bound that memory
    # whatever the shard size.
    emb = np.empty((len(texts), model.embedding_dim), dtype=p.dtype)
    for b in range(0, len(texts), ENCODE_BLOCK):
        emb[b:b + ENCODE_BLOCK] = model.encode_texts(texts[b:b + ENCODE_BLOCK], "passage", batch_size=p.batch_size,
                                                     progress=True, desc=f"encode shard {shard}")
    seconds = time.perf_counter() - t0
    # The embeddings first, the ids (what marks the shard complete for the gather step) last.
    with atomic_path(out_embeddings) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb)
    meta = {"shard": shard, "start": start, "end": end, "doc_ids": ids, "dim": int(emb.shape[1]),
            "dtype": p.dtype, "encode_seconds": round(seconds, 3), "model": str(model_dir),
            "normalized": bool(model.spec.normalize)}
    atomic_write_json(out_ids, meta)
    return {k: v for k, v in meta.items() if k != "doc_ids"}


# ----------------------------------------------------------------------------- gather
def shard_files(shards_dir: str | Path, plan: dict) -> list[tuple[Path, Path]]:
    shards_dir = Path(shards_dir)
    out = []
    for i in range(len(plan["shards"])):
        npy, meta = shards_dir / f"{i}.npy", shards_dir / f"{i}.json"
        if not npy.is_file() or not meta.is_file():
            raise PipelineError(f"{shards_dir}: shard {i} is missing ({npy.name}, {meta.name}); re-run encode_shard")
        out.append((npy, meta))
    return out


def gather(shards_dir: str | Path, plan_path: str | Path, out_dir: Path, dtype: str) -> dict:
    """Concatenate the shards into out_dir/embeddings.npy (+ docids.json), streamed. Returns the
    merged shard facts (num_docs, dim, encode_seconds summed over shards, model, normalized)."""
    plan = read_plan(plan_path)
    files = shard_files(shards_dir, plan)
    metas, doc_ids = [], []
    for i, (npy, meta_path) in enumerate(files):
        meta = read_json(meta_path)
        shape, _, _ = npy_header(npy)
        start, end = plan["shards"][i]
        if [meta.get("start"), meta.get("end")] != [start, end] or shape[0] != end - start \
                or len(meta.get("doc_ids", [])) != end - start:
            raise PipelineError(f"{meta_path}: shard {i} holds rows [{meta.get('start')}, {meta.get('end')}) "
                                f"({shape[0]} embeddings) but the plan says [{start}, {end}); re-run encode_shard")
        doc_ids.extend(meta.pop("doc_ids"))
        metas.append((meta, shape))
    dims = {shape[1] for _, shape in metas}
    if len(dims) != 1 or len({m["model"] for m, _ in metas}) != 1:
        raise PipelineError(f"{shards_dir}: shards come from different models or dims ({sorted(dims)})")
    if len(set(doc_ids)) != len(doc_ids):
        raise PipelineError(f"{shards_dir}: a doc id appears in two shards")
    dim = dims.pop()
    write_npy_stream(out_dir / EMBEDDINGS, (len(doc_ids), dim), dtype,
                     (block for npy, _ in files for _, block in iter_rows(npy)))
    (out_dir / DOC_IDS).write_text(json.dumps(doc_ids) + "\n", encoding="utf-8")
    first = metas[0][0]
    return {"num_docs": len(doc_ids), "dim": dim, "model": first["model"], "normalized": first["normalized"],
            "encode_seconds": round(sum(m["encode_seconds"] for m, _ in metas), 3), "shards": len(files)}


# ----------------------------------------------------------------------------- entry points
def main(argv: list[str] | None = None) -> dict:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipeline.retrieval.shards",
                                     description="Sharded corpus encoding: plan the shards, encode one shard.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    plan = sub.add_parser("plan", help="write the shard plan (row ranges) of a dataset")
    plan.add_argument("--dataset", required=True, help="normalised dataset folder (manifest.json)")
    size = plan.add_mutually_exclusive_group(required=True)
    size.add_argument("--shard-size", type=int, help="passages per shard")
    size.add_argument("--shards", type=int, help="number of near-equal shards")
    plan.add_argument("--out", required=True, help="plan.json to write")
    enc = sub.add_parser("encode", help="encode one shard of the corpus")
    enc.add_argument("--model", required=True, help="model folder (loads with BiEncoder.load)")
    enc.add_argument("--dataset", required=True, help="normalised dataset folder")
    enc.add_argument("--plan", required=True, help="plan.json written by `plan`")
    enc.add_argument("--shard", type=int, required=True, help="shard number (0-based)")
    enc.add_argument("--out-embeddings", required=True, help="<i>.npy to write")
    enc.add_argument("--out-ids", required=True, help="<i>.json to write (doc ids and shard facts)")
    enc.add_argument("--params-json", default="{}", help="the index parameters; defaults: "
                     + json.dumps(defaults(IndexParams)).replace("%", "%%"))
    args = parser.parse_args(argv)
    if args.cmd == "plan":
        return write_plan(args.dataset, args.out, shard_size=args.shard_size, shards=args.shards)
    return encode_shard(args.model, args.dataset, args.plan, args.shard, args.out_embeddings, args.out_ids,
                        as_index_params(parse_json_object(args.params_json)))


if __name__ == "__main__":
    run_main(main)
