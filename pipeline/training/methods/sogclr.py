"""SogCLR: the global contrastive loss with a small batch, through one moving-average estimate
of each training example's softmax denominator."""

from __future__ import annotations

import math
from typing import Any

import torch

from pipeline.core.common import PipelineError
from . import register
from .gradaccum import GradAccum
from .inbatch import ids_of


def sample_key(example) -> str:
    """The id SogCLR keys its state by: the (query, positive) pair, since a query with several
    positives is several training samples with different denominators."""
    if example.query_id is None or example.positive_id is None:
        raise PipelineError("method: sogclr keeps one state u_i per training example, keyed by its query_id and "
                            "positive_id, and an example has none; train from a prepared dataset (its examples carry "
                            "ids) or use another method")
    return f"{example.query_id}\t{example.positive_id}"


def sogclr_loss(q: torch.Tensor, passages: torch.Tensor, tau: float, log_u_old: torch.Tensor, gamma: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One micro-batch of SogCLR. Row i's label is column i; its negatives N_i are every other
    column not in `mask`. With h_ij = (q_i . p_j - q_i . p_i) / tau:

        g_i   = (1/|N_i|) sum_{j in N_i} exp(h_ij)
        u_i  <- (1 - gamma_i) u_i + gamma_i g_i       (gamma_i = 1 for a first visit)
        L     = (1/B) sum_i g_i / sg(u_i)

    so dL = (1/B) sum_i sum_{j in N_i} exp(h_ij) / (|N_i| u_i) (d s_ij - d s_ii) / tau: each
    negative weighted by its share of the estimated global denominator. Everything runs in log
    space (u is stored as log u) so a small tau cannot overflow.

    Returns (the surrogate loss, the batch's log g_i, the new log u_i), the last two detached."""
    scores = q @ passages.T
    rows = torch.arange(len(q), device=q.device)
    h = (scores - scores[rows, rows][:, None]) / tau
    negatives = torch.ones_like(h, dtype=torch.bool)
    negatives[rows, rows] = False
    if mask is not None:
        negatives &= ~mask
    count = negatives.sum(1).clamp(min=1).to(h.dtype)
    log_g = torch.logsumexp(h.masked_fill(~negatives, -math.inf), dim=1) - count.log()
    with torch.no_grad():
        log_g64 = log_g.detach().double()
        first = gamma >= 1
        kept = torch.where(first, log_g64, torch.log1p(-gamma.clamp(max=1 - 1e-12)) + log_u_old)
        log_u = torch.where(first, log_g64, torch.logaddexp(kept, gamma.log() + log_g64))
    loss = torch.exp(log_g - log_u.to(log_g.dtype)).mean()
    return loss, log_g64, log_u


@register("sogclr")
class SogCLR(GradAccum):
    """SogCLR over K micro-batches of N_local examples (K = 1: one batch per update):

        h_ij = (q_i . p_j - q_i . p_i) / tau,   g_i = mean_{j in N_i} exp(h_ij)
        u_i <- (1 - gamma) u_i + gamma g_i,     dL = (1/B) sum_i dg_i / u_i

    N_i holds the micro-batch's other positives and every hard negative, less the masked known
    positives. u_i estimates example i's softmax denominator over the whole training set (each
    visit adds the current batch's estimate), so the gradient follows the global contrastive loss
    (1/n) sum_i log g_i(all negatives) rather than the batch's: the paper's point that a small
    batch then does not hurt. The first visit sets u_i = g_i (gamma 1), as the reference code's
    first epoch does. One direction (query -> passages), like every other method here.

    State: log u_i per (query id, positive id), the update that last refreshed it; computed from
    the gathered batch, so every process holds the same state; saved in checkpoints.
    Stats: `state_samples` (examples with a state), `state_age_mean` / `state_age_max`
    (optimizer updates since a re-visited example's u_i was last refreshed), `state_new` (share
    of rows seen for the first time), `log_u_mean`.

    Yuan, Wu, Qiu, Du, Zhang, Zhou, Yang, "Provable Stochastic Optimization for Global
    Contrastive Learning: Small Batch Does Not Harm Performance", ICML 2022, arXiv 2202.12387.
    """

    emits = GradAccum.emits + ("state_samples", "state_age_mean", "state_age_max", "state_new", "log_u_mean")

    def __init__(self, model, recipe, noise=None):
        super().__init__(model, recipe, noise)
        gamma = self.recipe.sogclr_gamma
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise PipelineError(f"sogclr_gamma: expected a number in (0, 1], got {gamma!r}")
        self.gamma = float(gamma)
        self.tau = float(self.recipe.temperature)
        self.log_u: dict[str, float] = {}   # example key -> log u_i
        self.refreshed: dict[str, int] = {}  # example key -> the update that last set u_i
        self.updates = 0

    def batch_loss(self, q, p, h, examples=None):
        if examples is None:
            raise PipelineError("method: sogclr needs the examples of each micro-batch (their ids key u_i)")
        keys = [sample_key(ex) for ex in examples]
        q, p, h = self.add_noise(q, p, h)
        passages = torch.cat([p, h])
        query_ids, positive_ids, negative_ids = ids_of(examples, (len(q), len(p), len(h)))
        mask, stats = self.column_mask(query_ids, positive_ids + negative_ids, q.device)
        seen = [k in self.log_u for k in keys]
        old = torch.tensor([self.log_u.get(k, 0.0) for k in keys], dtype=torch.float64, device=q.device)
        gamma = torch.tensor([self.gamma if s else 1.0 for s in seen], dtype=torch.float64, device=q.device)
        loss, log_g, log_u = sogclr_loss(q, passages, self.tau, old, gamma, mask)
        ages = [self.updates - self.refreshed[k] for k, s in zip(keys, seen) if s]
        for key, value in zip(keys, log_u.cpu().tolist()):
            self.log_u[key], self.refreshed[key] = value, self.updates
        # The reported loss is the batch estimate of the objective, mean_i log g_i (the surrogate
        # g_i / u_i is ~1 by construction and says nothing).
        return loss, {"negatives_per_query": float(len(passages) - 1), **stats,
                      "state_samples": float(len(self.log_u)),
                      "state_age_mean": float(sum(ages) / len(ages)) if ages else 0.0,
                      "state_age_max": float(max(ages, default=0)), "state_new": 1 - len(ages) / len(keys),
                      "log_u_mean": float(log_u.mean()), "batch_log_g": float(log_g.mean())}

    def accumulate(self, examples):
        stats = super().accumulate(examples)
        stats["loss"] = stats.pop("batch_log_g")
        stats["state_samples"] = float(len(self.log_u))  # after the update, not a mean over micro-batches
        return stats

    def after_optimizer_step(self) -> None:
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        keys = list(self.log_u)
        # "rows" makes the training loop check the state is bit-identical in every process.
        return {"state": {"rows": torch.tensor([self.log_u[k] for k in keys], dtype=torch.float64),
                          "ids": keys, "born": [self.refreshed[k] for k in keys]},
                "updates": self.updates}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("state") or {"rows": torch.zeros(0), "ids": [], "born": []}
        self.log_u = dict(zip(saved["ids"], saved["rows"].tolist()))
        self.refreshed = dict(zip(saved["ids"], saved["born"]))
        self.updates = int(state.get("updates", 0))
