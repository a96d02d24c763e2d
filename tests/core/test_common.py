"""pipeline.core.common: atomic outputs (a file or a folder appears whole or not at all, a failed
block leaves the previous output), the JSON readers and the entry-point wrapper naming the file,
line or flag. Full disk: a write that fails for lack of space (simulated with a file-size limit in
the child, RLIMIT_FSIZE, with SIGXFSZ ignored so the write raises EFBIG) ends the train, index and
aggregate steps with one clear error naming the path and the bytes needed; the previous outputs
are intact and no half-written file is left."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.training import checkpoint
from pipeline.core import common
from pipeline.core.common import PipelineError
from tests.training.test_train import mini_dataset, recipe, run_train  # noqa: F401  (fixture and helpers)

REPO = Path(__file__).resolve().parents[2]


def file_size_limit(nbytes: int):
    """preexec_fn: no file may grow past `nbytes` in the child (what a full disk looks like to it)."""
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))
    return apply


def step(args: list[str], limit: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                          capture_output=True, text=True, timeout=600, preexec_fn=file_size_limit(limit))


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def temporaries(folder: Path) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.name.endswith(".tmp") or ".old-" in p.name]


def test_atomic_writes_replace_whole_files_with_plain_permissions(tmp_path):
    out = tmp_path / "a" / "metrics.json"
    common.atomic_write_json(out, {"b": np.float32(0.5), "a": np.int64(3), "v": np.arange(2), "p": Path("x")})
    assert out.read_text() == '{\n  "a": 3,\n  "b": 0.5,\n  "p": "x",\n  "v": [\n    0,\n    1\n  ]\n}\n'
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        common.atomic_write_json(out, {"x": object()})
    assert common.read_json(out)["a"] == 3 and not temporaries(tmp_path)


def test_atomic_path_and_dir_keep_the_previous_output_when_the_block_fails(tmp_path):
    target = tmp_path / "index.faiss"
    with common.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".tmp"
        tmp.write_bytes(b"first")
    with pytest.raises(ValueError), common.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise ValueError
    assert target.read_bytes() == b"first"
    folder = tmp_path / "model"
    with common.atomic_dir(folder) as tmp:
        (tmp / "weights").write_text("1")
    with pytest.raises(ValueError), common.atomic_dir(folder) as tmp:
        (tmp / "weights").write_text("2")
        raise ValueError
    assert (folder / "weights").read_text() == "1"
    with common.atomic_dir(folder) as tmp:
        (tmp / "other").write_text("3")
    assert [p.name for p in folder.iterdir()] == ["other"]  # the folder is swapped whole
    assert not temporaries(tmp_path)


def test_json_readers_name_the_file_and_line(tmp_path):
    with pytest.raises(PipelineError, match=f"{tmp_path / 'none.json'}: file not found"):
        common.read_json(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text('{\n"a": }')
    with pytest.raises(PipelineError, match=r"bad.json:2: invalid JSON"):
        common.read_json(tmp_path / "bad.json")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"_id": "a", "x": 1}\n\n{"_id": "b"}\n')
    assert [(k, w.rsplit(":", 1)[1]) for k, w, _ in common.iter_keyed_jsonl(rows, "_id")] == [("a", "1"), ("b", "3")]
    for text, message in (('{"_id": "a"}\n{"_id": "a"}\n', "rows.jsonl:2: duplicate _id 'a'"),
                          ('{"_id": 1}\n', "rows.jsonl:1: expected an object with a string '_id'"),
                          ('{"_id": "a"}\n{oops\n', "rows.jsonl:2: invalid JSON")):
        rows.write_text(text)
        with pytest.raises(PipelineError, match=message):
            list(common.iter_keyed_jsonl(rows, "_id"))


def test_json_arguments_and_the_entry_point_wrapper(capsys):
    assert common.parse_json_object('{"k": 1}') == {"k": 1}
    with pytest.raises(PipelineError, match="--recipe-json: expected a JSON object"):
        common.parse_json_object("[1]", "--recipe-json")
    with pytest.raises(PipelineError, match="--params-json: invalid JSON .* at column 2"):
        common.parse_json_object("{x")

    def fails(argv):
        raise PipelineError(f"config key x: bad {argv}")

    with pytest.raises(SystemExit) as exit_:
        common.run_main(fails, ["1"])
    assert exit_.value.code == 2 and capsys.readouterr().err == "error: config key x: bad ['1']\n"
    with pytest.raises(KeyError):  # a bug keeps its traceback
        common.run_main(lambda argv: {}["missing"], [])
    parser = common.step_parser("prog", "help", {"out": "output folder"}, {"top_k": 100, "fmt": "%d"})
    assert parser.parse_args(["--out", "o"]).params_json == "{}"
    assert '"top_k": 100' in parser.format_help() and '"%d"' in parser.format_help()


def test_train_full_disk_keeps_the_last_checkpoint(tiny_model_dir, mini_dataset, tmp_path):
    out = tmp_path / "model"
    rec = recipe(tiny_model_dir, max_steps=8, checkpoint_every=3)
    assert run_train(mini_dataset, out, rec, env={"PIPELINE_FAIL_AT_STEP": "5"}).returncode == 2
    before = snapshot(out)
    proc = step(["pipeline.training.train", "--dataset", str(mini_dataset), "--out", str(out), "--recipe-json", json.dumps(rec),
                 "--seed", "3", "--no-progress"], limit=2**20)  # the log fits, a checkpoint (~24 MB) does not
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {out / 'checkpoint-step6.pt'}: no space to write it (")
    needed = int(error.split("no space to write it (")[1].split(" bytes needed")[0])
    assert needed > 2**20 and "file-size limit 1048576 bytes" in error and "Traceback" not in proc.stderr
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k != "train_log.jsonl"} == \
        {k: v for k, v in before.items() if k != "train_log.jsonl"}  # the step-3 checkpoint and its digest
    assert checkpoint.verified(out / "checkpoint-step3.pt")
    assert not temporaries(out) and not (out / "train_summary.json").exists()


def test_index_full_disk_keeps_the_previous_index(zero_shot_grid):
    root, cfg, layout = zero_shot_grid
    index, model = layout.index("tiny", "zeroshot", "base"), layout.model("tiny", "zeroshot", "base") / "model"
    before = snapshot(index)
    proc = step(["pipeline.retrieval.index", "--model", str(model), "--dataset", str(layout.data("tiny")), "--out", str(index),
                 "--params-json", json.dumps(cfg["index"])], limit=1000)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # 40 passages x 32 dimensions x 4 bytes + the .npy header.
    assert f"error: {index / 'embeddings.npy'}: no space to write it ({40 * 32 * 4 + 128} bytes needed" in proc.stderr
    assert snapshot(index) == before and not temporaries(index.parent)


def test_aggregate_full_disk_keeps_the_previous_tables_and_plots(zero_shot_grid):
    root, cfg, layout = zero_shot_grid
    before = {name: snapshot(folder) for name, folder in (("tables", layout.tables), ("plots", layout.plots))}
    assert before["tables"] and before["plots"]
    proc = step(["pipeline.results.aggregate", "--results", str(layout.root), "--config", str(root / "grid.yaml")], limit=400)
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith(f"error: {layout.tables}/") and "bytes needed" in error, error
    after = {name: snapshot(folder) for name, folder in (("tables", layout.tables), ("plots", layout.plots))}
    assert after == before and not temporaries(layout.scope)
