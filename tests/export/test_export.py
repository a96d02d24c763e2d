"""pipeline.export.export: a trained model as a sentence-transformers folder that encodes exactly as the
pipeline does (tied and untied towers, mean and CLS pooling, normalised or not), and its failure
modes (incomplete folders, unknown runs and seeds, untrained runs, atomic replacement)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.core.common import PipelineError
from pipeline.sources.datasets import load_dataset
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.export.export import ExportJob, check_model_folder, export, resolve_job

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "data" / "embedded" / "scifact-mini"


@pytest.fixture(scope="module")
def mini_texts():
    ds = load_dataset(MINI)
    return list(ds.queries.values())[:24], ds.passages()[:24]


def save_model(root: Path, tiny: Path, *, tied: bool, pooling: str, normalize: bool) -> Path:
    spec = EncoderSpec(model=str(tiny), pooling=pooling, normalize=normalize, tied=tied,
                       query_max_length=24, passage_max_length=96)
    model = BiEncoder.from_spec(spec)
    if not tied:  # as after training: the towers differ, so a query routed to the passage tower would show
        torch.manual_seed(1)
        with torch.no_grad():
            for p in model.passage_model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    model.save(root / "model")
    return root / "model"


def job_for(model_dir: Path) -> ExportJob:
    spec = json.loads((model_dir / "bi_encoder.json").read_text())["spec"]
    return ExportJob(dataset="scifact-mini", run="dpr-4", tag="seed1", model_dir=model_dir,
                     train_summary={"steps": 3, "seconds": 1.0, "peak_mem_mb": 100.0, "n_total": 4},
                     recipe={"method": "inbatch", "encoder": spec})


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("normalize", [True, False], ids=["norm", "raw"])
def test_export_encodes_like_the_pipeline(tmp_path, tiny_model_dir, mini_texts, tied, pooling, normalize):
    from sentence_transformers import SentenceTransformer

    model_dir = save_model(tmp_path, tiny_model_dir, tied=tied, pooling=pooling, normalize=normalize)
    out = export(job_for(model_dir), tmp_path / "export")
    queries, passages = mini_texts
    ours = BiEncoder.load(model_dir)
    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    q_ours, p_ours = ours.encode_texts(queries, "query", progress=False), ours.encode_texts(passages, "passage",
                                                                                              progress=False)
    q_st, p_st = st.encode_query(queries, batch_size=7), st.encode_document(passages, batch_size=7)
    assert np.abs(q_ours - q_st).max() <= 1e-5
    assert np.abs(p_ours - p_st).max() <= 1e-5
    # The passages are longer than the query max length: the per-task lengths were applied.
    assert max(len(ours.tokenizer(p)["input_ids"]) for p in passages) > 24
    info = json.loads((out / "export.json").read_text())
    assert info["layout"] == ("transformer" if tied else "router")
    config = json.loads((out / "config_sentence_transformers.json").read_text())
    assert config["similarity_fn_name"] == "dot"
    assert not any(config["prompts"].values())  # the pipeline encodes raw text
    if not tied:  # the routes matter: the document tower embeds queries differently
        assert np.abs(st.encode_document(queries) - q_ours).max() > 1e-3
    norms = np.linalg.norm(p_st, axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == normalize


def test_zero_shot_untied_config_exports_one_tower(tmp_path, tiny_model_dir):
    spec = EncoderSpec(model=str(tiny_model_dir), tied=False, query_max_length=16, passage_max_length=32)
    BiEncoder.from_spec(spec).save(tmp_path / "model", weights=False)
    job = ExportJob(dataset="d", run="zeroshot", tag="base", model_dir=tmp_path / "model", train_summary={},
                    recipe={"method": "none", "encoder": spec.__dict__})
    out = export(job, tmp_path / "export")
    assert json.loads((out / "export.json").read_text())["layout"] == "transformer"
    assert (out / "model.safetensors").is_file() and not (out / "router_config.json").exists()


@pytest.mark.parametrize("damage, message", [
    (lambda m: (m / "bi_encoder.json").unlink(), "missing bi_encoder.json"),
    (lambda m: (m / "query" / "model.safetensors").unlink(), "no weights in query/"),
    (lambda m: shutil.rmtree(m / "passage"), "missing passage/config.json"),
    (lambda m: shutil.rmtree(m / "tokenizer"), "missing tokenizer/"),
], ids=["spec", "weights", "tower", "tokenizer"])
def test_incomplete_model_folder_keeps_the_previous_export(tmp_path, tiny_model_dir, damage, message):
    model_dir = save_model(tmp_path, tiny_model_dir, tied=False, pooling="mean", normalize=True)
    job = job_for(model_dir)
    out = export(job, tmp_path / "export")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    damage(model_dir)
    with pytest.raises(PipelineError, match=message):
        check_model_folder(model_dir)
    with pytest.raises(PipelineError, match=message):
        export(job, out)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # untouched, and no temporary folder left beside it
    assert sorted(p.name for p in out.parent.iterdir()) == ["export", "model"]


def test_reexport_replaces_the_whole_folder(tmp_path, tiny_model_dir):
    model_dir = save_model(tmp_path, tiny_model_dir, tied=True, pooling="mean", normalize=True)
    out = export(job_for(model_dir), tmp_path / "export")
    (out / "stale.txt").write_text("from an older export")
    export(job_for(model_dir), out)
    assert not (out / "stale.txt").exists() and (out / "modules.json").is_file()


def _grid(tmp_path: Path, tiny: Path) -> tuple[dict, Path]:
    from pipeline.core import config as pcfg
    from pipeline.core.layout import Layout

    cfg = pcfg.validate({"datasets": {"scifact-mini": {"source": "embedded"}}, "seeds": [1, 2],
                         "encoder": {"model": str(tiny)},
                         "runs": {"zeroshot": {"method": "none"}, "dpr-4": {"method": "inbatch", "batch_size": 4}}})
    layout = Layout.for_config(cfg, tmp_path / "results")
    save_model(layout.model("scifact-mini", "dpr-4", "seed1"), tiny, tied=True, pooling="mean", normalize=True)
    summary = layout.train_summary("scifact-mini", "dpr-4", "seed1")
    summary.write_text(json.dumps({"steps": 3, "n_total": 4}))
    return cfg, layout.root


def test_resolve_job_errors_name_the_problem(tmp_path, tiny_model_dir):
    cfg, results = _grid(tmp_path, tiny_model_dir)
    with pytest.raises(PipelineError, match=r"unknown run 'dpr-9'.*dpr-4"):
        resolve_job(cfg, results, "dpr-9", 1)
    with pytest.raises(PipelineError, match=r"unknown seed 5; the config has seeds \[1, 2\]"):
        resolve_job(cfg, results, "dpr-4", 5)
    with pytest.raises(PipelineError, match="is trained; name one of its seeds"):
        resolve_job(cfg, results, "dpr-4", None)
    with pytest.raises(PipelineError, match=r"has not trained on scifact-mini"):
        resolve_job(cfg, results, "dpr-4", 2)
    with pytest.raises(PipelineError, match=r"has not trained"):
        resolve_job(cfg, results, "zeroshot", None)
    with pytest.raises(PipelineError, match=r"metrics.json: not found: run 'dpr-4' seed 1 has not been evaluated"):
        resolve_job(cfg, results, "dpr-4", 1)


def test_cli_reports_bad_input_in_one_line(tmp_path, tiny_model_dir, capsys):
    from pipeline.core.common import run_main
    from pipeline.export.export import main

    cfg, results = _grid(tmp_path, tiny_model_dir)
    capsys.readouterr()  # the fixture's own loading output
    with pytest.raises(SystemExit) as exc:
        run_main(main, ["--config-json", json.dumps(cfg), "--run", "nope", "--results", str(results)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: --run: unknown run 'nope'")
