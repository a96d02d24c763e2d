"""Contrastive Accumulation: gradient accumulation with dual query/passage memory banks."""

from __future__ import annotations

from typing import Any

import torch

from . import register
from .gradaccum import GradAccum
from .inbatch import ids_of


class FifoBank:
    """Detached rows, oldest first, holding at most `capacity` rows (newest in, oldest out), with
    each row's id (a query or passage id, None if unknown) and the optimizer update whose encoder
    produced it (its age is how many updates the encoder has taken since)."""

    def __init__(self, capacity: int):
        self.capacity = int(capacity)
        self.rows: torch.Tensor | None = None
        self.ids: list = []
        self.born: list[int] = []

    def __len__(self) -> int:
        return 0 if self.rows is None else int(self.rows.shape[0])

    def push(self, x: torch.Tensor, ids: list | None = None, born: int = 0) -> None:
        if self.capacity <= 0 or x.shape[0] == 0:
            return
        x = x.detach()
        ids = list(ids) if ids is not None else [None] * x.shape[0]
        if len(ids) != x.shape[0]:
            raise ValueError(f"FifoBank.push: {x.shape[0]} rows but {len(ids)} ids")
        rows = x if self.rows is None else torch.cat([self.rows, x])
        self.rows = rows[-self.capacity:]
        self.ids = (self.ids + ids)[-self.capacity:]
        self.born = (self.born + [int(born)] * x.shape[0])[-self.capacity:]

    def get(self, like: torch.Tensor) -> torch.Tensor:
        if self.rows is None:
            return like.new_zeros((0, like.shape[1]))
        return self.rows.to(device=like.device, dtype=like.dtype)

    def ages(self, now: int) -> list[int]:
        return [now - born for born in self.born]

    def clear(self) -> None:
        self.rows, self.ids, self.born = None, [], []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": None if self.rows is None else self.rows.detach().cpu().clone(),
                "ids": list(self.ids), "born": list(self.born)}

    def load_state_dict(self, state: dict[str, Any] | None, device) -> None:
        self.clear()
        if state and state["rows"] is not None:
            self.rows = state["rows"].to(device)
            self.ids, self.born = list(state["ids"]), list(state["born"])


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
    - Guided filtering (`negative_filter`): bank columns are scored by the guide like current
      ones. A guide model's embeddings of each banked text are banked beside it (M_q^g, M_p^g,
      M_h^g: N_memory * d_guide * 4 bytes more per bank, and no text is guide-encoded twice);
      the "self" guide uses the banked rows themselves.
    - Banks keep the query/passage id of each row, so a banked passage that is a known positive
      of a current query is masked like any other column (`false_negatives: mask`), and the
      update that encoded it: `bank_age_mean` / `bank_age_max` report how many optimizer updates
      old the passage bank's rows are when a micro-batch is scored against them.

    Kim, Lee, Kang, "A Gradient Accumulation Method for Dense Retriever under Memory
    Constraint", NeurIPS 2024, arXiv 2406.12356.
    """

    emits = GradAccum.emits + ("loss_rows", "bank_fill", "bank_age_mean", "bank_age_max")
    has_memory = True

    def __init__(self, model, recipe, noise=None):
        super().__init__(model, recipe, noise)
        recipe = self.recipe
        self.memory_size = int(recipe.memory_size)
        self.query_bank = bool(recipe.query_bank)
        self.bank_update = recipe.bank_update
        if self.bank_update not in ("micro", "step"):
            raise ValueError(f"bank_update: expected 'micro' or 'step', got {self.bank_update!r}")
        self.reset_each_step = bool(recipe.reset_bank_each_step)
        per_query = int((recipe.hard_negatives or {}).get("per_query") or 1)
        self.bank_q = FifoBank(self.memory_size if self.query_bank else 0)
        self.bank_p = FifoBank(self.memory_size)
        self.bank_h = FifoBank(self.memory_size * per_query)
        # A guide model's embeddings of the banked texts, aligned with the banks ("self" needs none).
        self.guide_banks = None
        if self.guide is not None and not self.guide.is_self:
            self.guide_banks = {"q": FifoBank(self.bank_q.capacity), "p": FifoBank(self.bank_p.capacity),
                                "h": FifoBank(self.bank_h.capacity)}
        self._last_guide = None  # the current micro-batch's guide rows, banked after its backward
        # (q, p, h, examples' ids, update, guide rows or None) enqueued after the step
        self._pending: list[tuple] = []
        self.updates = 0  # optimizer updates taken so far: the encoder's version

    def bank_fill(self) -> int:
        return len(self.bank_p)

    def accumulate(self, examples):
        stats = super().accumulate(examples)
        stats["bank_fill"] = float(self.bank_fill())
        return stats

    def fill_memory(self, rows: int) -> None:
        param = next(self.model.parameters())
        banks = [(self.bank_q, self.model.embedding_dim), (self.bank_p, self.model.embedding_dim)]
        if self.guide_banks is not None:
            banks += [(self.guide_banks["q"], self.guide.dim), (self.guide_banks["p"], self.guide.dim)]
        for bank, dim in banks:
            if bank.capacity:
                unit = torch.randn(min(rows, bank.capacity), dim, device=param.device)
                bank.push(torch.nn.functional.normalize(unit, dim=-1))

    def batch_loss(self, q, p, h, examples=None):
        guide = self._last_guide = self.guide_embeddings(q, p, h, examples)
        q, p, h = self.add_noise(q, p, h)
        queries = torch.cat([q, self.bank_q.get(q)])
        passages = torch.cat([p, self.bank_p.get(p), h, self.bank_h.get(h)])
        query_ids, positive_ids, negative_ids = ids_of(examples, (len(q), len(p), len(h)))
        mask, stats = self.loss_mask(query_ids + self.bank_q.ids,
                                     positive_ids + self.bank_p.ids + negative_ids + self.bank_h.ids,
                                     *self._banked_guide(guide), q.device)
        ages = self.bank_p.ages(self.updates) or [0]
        return self.loss_fn(queries, passages, mask), {
            "negatives_per_query": float(len(passages) - 1), **stats, "loss_rows": float(len(queries)),
            "bank_age_mean": sum(ages) / len(ages), "bank_age_max": float(max(ages))}

    def _banked_guide(self, guide) -> tuple:
        """Guide rows [current ; banked queries] and columns laid out as the loss's passages."""
        if guide is None:
            return None, None
        gq, gp, gh = guide
        banks = self.guide_banks or {"q": self.bank_q, "p": self.bank_p, "h": self.bank_h}
        return (torch.cat([gq, banks["q"].get(gq)]),
                torch.cat([gp, banks["p"].get(gp), gh, banks["h"].get(gh)]))

    def _enqueue(self, q, p, h, ids, born, guide=None) -> None:
        query_ids, positive_ids, negative_ids = ids
        self.bank_q.push(q, query_ids, born)
        self.bank_p.push(p, positive_ids, born)
        self.bank_h.push(h, negative_ids, born)
        if self.guide_banks is not None:
            for side, rows, row_ids in zip("qph", guide, ids):
                self.guide_banks[side].push(rows, row_ids, born)

    def after_micro_batch(self, q, p, h, batch=None) -> None:
        guide = None if self.guide_banks is None else tuple(x.detach() for x in self._last_guide)
        item = (q, p, h, ids_of(batch, (len(q), len(p), len(h))), self.updates, guide)
        if self.bank_update == "micro":
            self._enqueue(*item)
        else:
            self._pending.append(item)

    def after_optimizer_step(self) -> None:
        for item in self._pending:
            self._enqueue(*item)
        self._pending.clear()
        self.updates += 1
        if self.reset_each_step:
            self.clear_banks()

    def _all_banks(self) -> dict[str, FifoBank]:
        banks = {"bank_q": self.bank_q, "bank_p": self.bank_p, "bank_h": self.bank_h}
        for side, bank in (self.guide_banks or {}).items():
            banks[f"guide_bank_{side}"] = bank
        return banks

    def clear_banks(self) -> None:
        for bank in self._all_banks().values():
            bank.clear()

    def state_dict(self) -> dict[str, Any]:
        def moved(item, to):
            q, p, h, ids, born, guide = item
            guide = None if guide is None else tuple(to(t) for t in guide)
            return (to(q), to(p), to(h), ids, born, guide)

        return {**{name: bank.state_dict() for name, bank in self._all_banks().items()}, "updates": self.updates,
                "pending": [moved(item, lambda t: t.cpu().clone()) for item in self._pending]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = next(self.model.parameters()).device
        for name, bank in self._all_banks().items():
            bank.load_state_dict(state.get(name), device)
        self.updates = int(state.get("updates", 0))
        self._pending = []
        for item in state.get("pending", []):
            item = tuple(item) + (None,) * (6 - len(item))  # checkpoints from before guide rows were banked
            q, p, h, ids, born, guide = item
            guide = None if guide is None else tuple(t.to(device) for t in guide)
            self._pending.append((q.to(device), p.to(device), h.to(device), ids, born, guide))
