"""Contrastive Accumulation: gradient accumulation with dual query/passage memory banks."""

from __future__ import annotations

from typing import Any

import torch

from . import register
from .gradaccum import GradAccum


class FifoBank:
    """Detached rows, oldest first, holding at most `capacity` rows (newest in, oldest out)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.rows: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.rows is None else int(self.rows.shape[0])

    def push(self, x: torch.Tensor) -> None:
        if self.capacity <= 0 or x.shape[0] == 0:
            return
        x = x.detach()
        rows = x if self.rows is None else torch.cat([self.rows, x])
        self.rows = rows[-self.capacity:]

    def get(self, like: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return like.new_zeros((0, like.shape[1]))
        return self.rows.to(device=like.device, dtype=like.dtype)

    def clear(self) -> None:
        self.rows = None


@register("contaccum")
class ContAccum(GradAccum):
    """ContAccum: K micro-batches, each scored against FIFO banks of past (detached) embeddings.

        Q = [Q_k ; sg(M_q)],  P = [P_k ; sg(M_p) ; H_k ; sg(M_h)],  S = Q P^T / tau
        L = (1/K) * sum_k InfoNCE(S),  labels = arange(len(Q)), mean over all len(Q) rows

    A banked query row's positive is its aligned banked passage, so banked rows are real loss
    rows that send gradient into the current passages. With tau, for a current row l
    (R = N_local + N_mem^q, S(l, j) the softmax probability):

        dL/dq_l = -1/(R tau) * (p_l - sum_j S(l, j) p_j)            (Eq. 8)
        dL/dp_l = -1/(R tau) * (q_l - sum_i S(i, l) q_i)            (Eq. 9)

    Semantics (docs/methods.md#memory-banks-pre-batch-negatives-and-contaccum, as the official code):
    - `memory_size` is in samples; M_q and M_p are pushed together so they stay aligned; the
      hard-negative bank M_h holds `memory_size * per_query` rows.
    - The current micro-batch is scored first and enqueued afterwards, so it never appears
      twice in S. `bank_update="micro"` enqueues after every micro-batch (later micro-batches of
      the same step see earlier ones); `"step"` enqueues the whole step after the optimizer step.
    - `reset_bank_each_step` clears the banks after each optimizer step (the "without past
      encoder" ablation); `query_bank=False` keeps only M_p (pre-batch negatives, Lee et al.
      2021), so Q = Q_k; `memory_size=0` is exactly GradAccum.
    - Banks store clean embeddings (L2-normalised, before FANoise): noise is a fresh
      perturbation of the trainable path, and a draw frozen into a bank would be re-used as a
      fixed offset for many steps.

    Kim, Lee, Kang, "A Gradient Accumulation Method for Dense Retriever under Memory
    Constraint", NeurIPS 2024, arXiv 2406.12356.
    """

    emits = GradAccum.emits + ("bank_fill",)
    has_memory = True

    def __init__(self, model, recipe, noise=None):
        super().__init__(model, recipe, noise)
        recipe = self.recipe
        self.memory_size = int(recipe["memory_size"])
        self.query_bank = bool(recipe["query_bank"])
        self.bank_update = recipe["bank_update"]
        if self.bank_update not in ("micro", "step"):
            raise ValueError(f"bank_update: expected 'micro' or 'step', got {self.bank_update!r}")
        self.reset_each_step = bool(recipe["reset_bank_each_step"])
        per_query = int((recipe["hard_negatives"] or {}).get("per_query") or 1)
        self.bank_q = FifoBank(self.memory_size if self.query_bank else 0)
        self.bank_p = FifoBank(self.memory_size)
        self.bank_h = FifoBank(self.memory_size * per_query)
        self._pending: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def bank_fill(self) -> int:
        return len(self.bank_p)

    def accumulate(self, examples):
        stats = super().accumulate(examples)
        stats["bank_fill"] = float(self.bank_fill())
        return stats

    def fill_memory(self, rows: int) -> None:
        param = next(self.model.parameters())
        for bank in (self.bank_q, self.bank_p):
            if bank.capacity:
                unit = torch.randn(min(rows, bank.capacity), self.model.embedding_dim, device=param.device)
                bank.push(torch.nn.functional.normalize(unit, dim=-1))

    def batch_loss(self, q, p, h):
        q, p, h = self.add_noise(q, p, h)
        queries = torch.cat([q, self.bank_q.get(q)])
        passages = torch.cat([p, self.bank_p.get(p), h, self.bank_h.get(h)])
        return self.loss_fn(queries, passages), {"negatives_per_query": float(len(passages) - 1),
                                                 "loss_rows": float(len(queries))}

    def _enqueue(self, q, p, h) -> None:
        self.bank_q.push(q)
        self.bank_p.push(p)
        self.bank_h.push(h)

    def after_micro_batch(self, q, p, h) -> None:
        if self.bank_update == "micro":
            self._enqueue(q, p, h)
        else:
            self._pending.append((q, p, h))

    def after_optimizer_step(self) -> None:
        for q, p, h in self._pending:
            self._enqueue(q, p, h)
        self._pending.clear()
        if self.reset_each_step:
            self.clear_banks()

    def clear_banks(self) -> None:
        for bank in (self.bank_q, self.bank_p, self.bank_h):
            bank.clear()

    def state_dict(self) -> dict[str, Any]:
        def rows(bank):
            return None if bank.rows is None else bank.rows.detach().cpu().clone()

        return {"bank_q": rows(self.bank_q), "bank_p": rows(self.bank_p), "bank_h": rows(self.bank_h),
                "pending": [tuple(t.cpu().clone() for t in item) for item in self._pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        for name in ("bank_q", "bank_p", "bank_h"):
            bank, rows = getattr(self, name), state.get(name)
            bank.clear()
            if rows is not None:
                bank.push(rows.to(device))
        self._pending = [tuple(t.to(device) for t in item) for item in state.get("pending", [])]
