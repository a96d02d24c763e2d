"""SogCLR: the moving-average denominator and its gradient against the paper's equations (and
LibAUC's GCLoss_v2 where libauc is importable), exact resume, and clear errors on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.core.common import PipelineError
from pipeline.training.methods import Example, get_method
from pipeline.training.methods.sogclr import sogclr_loss
from tests.training.test_train import kill_at_first_checkpoint, mini_dataset, recipe, run_train, weights  # noqa: F401  (mini_dataset is a fixture)

TAU = 0.1


def unit(rows, dim, seed):
    x = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return torch.nn.functional.normalize(x, dim=-1)


def oracle(q, p, u_old, gamma, mask=None):
    """The paper's equations, written out in numpy: the new u and the loss gradient with respect
    to q and p, dL = (1/B) sum_i sum_{j in N_i} exp(h_ij) / (|N_i| u_i) (ds_ij - ds_ii) / tau."""
    q, p = q.numpy(), p.numpy()
    b, n = q.shape[0], p.shape[0]
    s = q @ p.T
    neg = ~np.eye(b, n, dtype=bool) if mask is None else (~np.eye(b, n, dtype=bool) & ~mask)
    h = (s - np.diag(s)[:, None]) / TAU
    g = np.array([np.exp(h[i, neg[i]]).mean() for i in range(b)])
    u = np.where(np.isnan(u_old), g, (1 - gamma) * np.nan_to_num(u_old) + gamma * g)
    w = np.where(neg, np.exp(h), 0.0) / (neg.sum(1, keepdims=True) * u[:, None] * TAU * b)
    dq = w @ p - w.sum(1, keepdims=True) * p[:b]
    dp = w.T @ q
    dp[:b] -= w.sum(1, keepdims=True) * q
    return u, g, dq, dp


def run(q, p, log_u, gamma, mask=None):
    q, p = q.clone().requires_grad_(), p.clone().requires_grad_()
    loss, log_g, new = sogclr_loss(q, p, TAU, log_u, gamma, mask)
    loss.backward()
    return loss, log_g, new, q.grad, p.grad


def test_loss_state_and_gradient_match_the_paper():
    b, gamma = 5, 0.7
    p = unit(b + 3, 8, 1)  # 5 positives and 3 hard negatives
    u = np.full(b, np.nan)
    log_u = torch.zeros(b, dtype=torch.float64)
    mask = np.zeros((b, b + 3), dtype=bool)
    mask[0, 2] = mask[3, 6] = True  # two known positives leave their rows' negatives
    for step in range(3):  # first visit (u = g), then two moving-average steps on new embeddings
        q = unit(b, 8, 10 + step)
        gammas = torch.full((b,), 1.0 if step == 0 else gamma, dtype=torch.float64)
        loss, log_g, log_u, dq, dp = run(q, p, log_u, gammas, torch.from_numpy(mask))
        u, g, want_dq, want_dp = oracle(q, p, u, gamma, mask)
        np.testing.assert_allclose(log_g.exp().numpy(), g, rtol=1e-12)
        np.testing.assert_allclose(log_u.exp().numpy(), u, rtol=1e-12)
        np.testing.assert_allclose(float(loss.detach()), float(np.mean(g / u)), rtol=1e-12)
        np.testing.assert_allclose(dq.numpy(), want_dq, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(dp.numpy(), want_dp, rtol=1e-9, atol=1e-12)
    assert not np.allclose(u, g)  # the moving average really lags the batch estimate


def test_gamma_one_is_the_batch_loss_gradient():
    """With gamma = 1 the estimate is the batch's own, so the gradient is that of the batch
    loss mean_i log g_i (InfoNCE with the positive left out of the denominator)."""
    q, p = unit(6, 8, 3), unit(6, 8, 4)
    _, _, _, dq, dp = run(q, p, torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64))
    q2, p2 = q.clone().requires_grad_(), p.clone().requires_grad_()
    h = (q2 @ p2.T - (q2 * p2).sum(1)[:, None]) / TAU
    h = h.masked_fill(torch.eye(6, dtype=torch.bool), -float("inf"))
    (torch.logsumexp(h, 1) - np.log(5)).mean().backward()
    torch.testing.assert_close(dq, q2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(dp, p2.grad, rtol=1e-10, atol=1e-12)


def test_matches_libauc_gcloss_v2():
    """LibAUC 2.0.1's bimodal SogCLR loss averages the two directions and scales each row's
    gradient by tau * (B - 1); ours is one direction (query -> passage), so the reference's
    gradient is (tau (B-1) / 2) (ours(q, p; u_q) + ours(p, q; u_p)), and its u1 (stored relative
    to a running maximum b1) is our query-side u."""
    contrastive = pytest.importorskip("libauc.losses.contrastive")
    b, gamma = 6, 0.8
    ref = contrastive.GCLoss_v2(N=20, tau=TAU, gamma=gamma)
    index = torch.tensor([3, 7, 1, 12, 0, 5])
    log_uq = log_up = torch.zeros(b, dtype=torch.float64)
    for step in range(2):
        q, p = unit(b, 8, 20 + step), unit(b, 8, 30 + step)
        gammas = torch.full((b,), 1.0 if step == 0 else gamma, dtype=torch.float64)
        _, _, log_uq, dq1, dp1 = run(q, p, log_uq, gammas)
        _, _, log_up, dp2, dq2 = run(p, q, log_up, gammas)
        qf, pf = q.float().requires_grad_(), p.float().requires_grad_()
        loss, _ = ref(qf, pf, index)
        loss.backward()
        scale = TAU * (b - 1) / 2
        torch.testing.assert_close(qf.grad.double(), scale * (dq1 + dq2), rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(pf.grad.double(), scale * (dp1 + dp2), rtol=1e-4, atol=1e-6)
        ref_log_u = (ref.u1[index].log() + ref.b1[index]).squeeze(1).double()
        torch.testing.assert_close(ref_log_u, log_uq, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- the method
def examples(n, ids=True):
    return [Example(f"question {i} about subject {i * 7}", f"passage {i} on subject {i * 7}",
                    query_id=f"q{i}" if ids else None, positive_id=f"d{i}" if ids else None) for i in range(n)]


def build(model_dir):
    from pipeline.models.encoder import BiEncoder, EncoderSpec

    return BiEncoder.from_spec(EncoderSpec(model=str(model_dir), query_max_length=16, passage_max_length=24)).train()


def test_state_is_per_example_and_ages_with_updates(tiny_model_dir):
    method = get_method("sogclr")(build(tiny_model_dir), {"batch_size": 4, "accumulation_steps": 2,
                                                          "sogclr_gamma": 0.5})
    data = examples(12)
    plan = [data[:8], data[8:] + data[:4], data[4:12]]  # the second and third updates re-visit examples
    seen = []
    for batch in plan:
        stats = method.accumulate(batch)
        method.after_optimizer_step()
        seen.append(stats)
    assert [s["state_samples"] for s in seen] == [8, 12, 12]
    assert seen[0]["state_new"] == 1 and seen[0]["state_age_mean"] == 0
    assert seen[1]["state_new"] == pytest.approx(0.5) and seen[1]["state_age_max"] == 1
    assert seen[2]["state_age_max"] == 2  # examples 4..7 were last refreshed two updates earlier
    state = method.state_dict()
    assert state["state"]["ids"][0] == "q0\td0" and state["updates"] == 3
    fresh = get_method("sogclr")(build(tiny_model_dir), {"batch_size": 4, "accumulation_steps": 2})
    fresh.load_state_dict(state)
    assert fresh.log_u == method.log_u and fresh.refreshed == method.refreshed and fresh.updates == 3


def test_examples_without_ids_are_a_clear_error(tiny_model_dir):
    method = get_method("sogclr")(build(tiny_model_dir), {"batch_size": 4})
    with pytest.raises(PipelineError, match="method: sogclr .*query_id and positive_id"):
        method.accumulate(examples(4, ids=False))


def test_every_example_a_config_can_train_on_has_ids(mini_dataset):  # noqa: F811
    """Why "SogCLR without ids" has no config check: the train job's examples all come from
    TrainingData over a prepared dataset (BEIR ids; DPR/Tevatron files get ids when prepared),
    and the derived `pairs` keep ids (`title:<doc>`, `crop:<doc>`). Only a caller that builds
    Examples itself can lack them, and it gets the error above at its first batch."""
    from pipeline.core.params import CropParams
    from pipeline.sources.datasets import load_dataset
    from pipeline.training.methods.sogclr import sample_key
    from pipeline.training.pairs import TrainingData

    pairs = {"sources": ["qrels", "title", "crop"], "crop": {"min_words": CropParams.min_words, "max_words": 20}}
    data = TrainingData(load_dataset(mini_dataset), "train", pairs=pairs, seed=0).epoch(0)
    keys = [sample_key(ex) for ex in data]
    assert {k.split(":")[0] for k in keys if ":" in k.split("\t")[0]} == {"title", "crop"}
    assert len(set(keys)) == len(keys)


@pytest.mark.parametrize("gamma", [0, -0.1, 1.5, "0.5"])
def test_gamma_out_of_range_is_a_clear_error(tiny_model_dir, gamma):
    with pytest.raises(PipelineError, match=r"sogclr_gamma: expected a number in \(0, 1\]"):
        get_method("sogclr")(build(tiny_model_dir), {"batch_size": 4, "sogclr_gamma": gamma})


def test_config_checks_gamma_before_any_job():
    from pipeline.core.config import ConfigError, validate

    config = {"datasets": {"d": {"source": "embedded"}}, "runs": {"r": {"method": "sogclr", "sogclr_gamma": 0}}}
    with pytest.raises(ConfigError, match="runs.r.sogclr_gamma"):
        validate(config)
    config["runs"]["r"]["sogclr_gamma"] = 1
    assert validate(config)["runs"]["r"]["method"] == "sogclr"


def test_resume_after_sigkill_matches_uninterrupted(tiny_model_dir, mini_dataset, tmp_path):  # noqa: F811
    rec = recipe(tiny_model_dir, method="sogclr", memory_size=0, sogclr_gamma=0.6, max_steps=50, checkpoint_every=5)
    assert run_train(mini_dataset, tmp_path / "full", rec).returncode == 0

    out = tmp_path / "killed"
    kill_at_first_checkpoint(mini_dataset, out, rec)
    resumed = run_train(mini_dataset, out, rec)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "train_summary.json").read_text())["resumed_from_step"] >= 5

    def log(path):
        return [json.loads(line) for line in (path / "train_log.jsonl").read_text().splitlines()]

    rows, full = log(out), log(tmp_path / "full")
    assert [r["step"] for r in rows] == list(range(1, 51))
    # 343 training pairs, 8 per update: from update 43 on, examples come back with a state to use
    assert max(r["state_age_max"] for r in full) > 0
    for key in ("loss", "log_u_mean", "state_samples", "state_age_mean"):
        assert [r[key] for r in rows] == pytest.approx([r[key] for r in full], abs=1e-6), key
    a, b = weights(tmp_path / "full"), weights(out)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
