"""`gradient_checkpointing: true` recomputes encoder activations in backward without changing
the gradients, for every method, with dropout on (torch replays the RNG state on recomputation,
and GradCache's no-grad first pass runs through the checkpointed layers unchanged)."""

from __future__ import annotations

import pytest
import torch

from pipeline.core.common import PipelineError
from pipeline.models.encoder import BiEncoder, EncoderSpec
from pipeline.training.methods import Example, available, get_method

RECIPES = {
    "inbatch": {"batch_size": 6},
    "gradaccum": {"batch_size": 3, "accumulation_steps": 2},
    "gradcache": {"batch_size": 4, "accumulation_steps": 2},
    "contaccum": {"batch_size": 3, "accumulation_steps": 2, "memory_size": 6},
    "sogclr": {"batch_size": 3, "accumulation_steps": 2},
}
DEFAULT_RECIPE = {"batch_size": 3, "accumulation_steps": 2}  # a method registered later than this file


def examples(n):
    return [Example(f"question {i} about subject {i * 7}", f"passage {i} on subject {i * 7} " * (1 + i % 3),
                    [f"unrelated text {i}"], query_id=f"q{i}", positive_id=f"d{i}", negative_ids=[f"n{i}"])
            for i in range(n)]


def gradients(model_dir, name, checkpointing, updates=2, seed=0):
    """The flattened gradient of each of `updates` updates (no optimizer step, so banks and
    SogCLR's state carry over and are used by the second update)."""
    model = BiEncoder.from_spec(EncoderSpec(model=str(model_dir), tied=False, query_max_length=16,
                                            passage_max_length=24)).train()
    method = get_method(name)(model, {**RECIPES.get(name, DEFAULT_RECIPE), "gradient_checkpointing": checkpointing})
    assert model.gradient_checkpointing() == checkpointing
    data = examples(method.examples_per_update * updates)
    torch.manual_seed(seed)
    out = []
    for u in range(updates):
        model.zero_grad(set_to_none=True)
        method.accumulate(data[u * method.examples_per_update:(u + 1) * method.examples_per_update])
        out.append(torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None]))
        method.after_optimizer_step()
    return out


@pytest.mark.parametrize("name", available())
def test_checkpointing_leaves_gradients_unchanged_with_dropout(tiny_dropout_model_dir, name):
    plain = gradients(tiny_dropout_model_dir, name, False)
    ckpt = gradients(tiny_dropout_model_dir, name, True)
    for u, (a, b) in enumerate(zip(plain, ckpt)):
        err = float(torch.linalg.vector_norm(b - a) / torch.linalg.vector_norm(a))
        assert err <= 1e-6, f"{name} update {u + 1}: relative gradient error {err:.2e}"
    # Dropout is really on: another seed draws other masks, hence other gradients.
    other = gradients(tiny_dropout_model_dir, name, False, updates=1, seed=1)[0]
    assert float(torch.linalg.vector_norm(other - plain[0])) > 0


def test_a_model_without_checkpointing_support_is_a_clear_error(tiny_model_dir):
    spec = EncoderSpec(model=str(tiny_model_dir))
    tower = torch.nn.Linear(4, 4)  # a plain module: no Hugging Face checkpointing support
    model = BiEncoder(spec, tower, tower, tokenizer=None)
    with pytest.raises(PipelineError, match="gradient_checkpointing: .*does not support"):
        get_method("inbatch")(model, {"gradient_checkpointing": True})
    get_method("inbatch")(model, {"gradient_checkpointing": False})  # off: nothing to support


def test_config_rejects_a_non_boolean(tmp_path):
    from pipeline.core.config import ConfigError, validate

    config = {"datasets": {"d": {"source": "embedded"}},
              "runs": {"r": {"method": "inbatch", "gradient_checkpointing": "often"}}}
    with pytest.raises(ConfigError, match="runs.r.gradient_checkpointing"):
        validate(config)
    config["runs"]["r"]["gradient_checkpointing"] = True
    assert validate(config)["runs"]["r"]["gradient_checkpointing"] is True


def test_bench_puts_checkpointing_beside_each_method(tiny_model_dir, tmp_path):
    import csv
    import os
    import subprocess
    import sys

    out = tmp_path / "bench"
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.bench.memory", "--out", str(out), "--methods", "gradcache", "--n-local", "2",
         "--n-totals", "4", "--updates", "1", "--model", str(tiny_model_dir), "--query-length", "8",
         "--passage-length", "16"],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["method"], r["n_total"], r["gradient_checkpointing"], r["status"]) for r in rows] == [
        ("gradcache", "4", "False", "ok"), ("gradcache", "4", "True", "ok")]
    assert "N_total=4 gradcache+ckpt:" in proc.stdout


def test_default_bench_has_inbatch_64_with_checkpointing_and_sogclr_8():
    """Issue #24's bench rows: in-batch at 64 with and without checkpointing beside the
    accumulating methods at N_total 64, and SogCLR at one micro-batch of 8 (its small-batch claim)."""
    from pipeline.bench.memory import cases, parse_args

    rows = {(c["method"], c["n_local"], c["n_total"], c["gradient_checkpointing"]) for c in cases(parse_args([]))}
    assert {("inbatch", 64, 64, True), ("inbatch", 64, 64, False), ("sogclr", 8, 8, False), ("sogclr", 8, 8, True),
            ("gradcache", 8, 64, True), ("contaccum", 8, 64, True), ("sogclr", 8, 64, False)} <= rows
