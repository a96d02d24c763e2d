"""Several training processes (torchrun / DDP style) without a DDP wrapper.

Every process holds the whole model and reads the same global batch; `local_slice` gives
process r a contiguous, deterministic slice of each micro-batch, and `gather` concatenates the
processes' embeddings in rank order, so every process rebuilds exactly the batch a single
process would see and computes the same loss over the global negatives. `gather` keeps the
graph of the local rows only: the backward of process r yields dL/dθ through its own rows, and
`all_reduce_grads` (one SUM of the flattened gradients per optimizer update) adds the
processes' shares into the single-process gradient.

Every helper is the identity when there is one process (or no process group), so a one-process
run needs no torchrun and pays for no collective: its steps are those of a plain training loop.
"""

from __future__ import annotations

import hashlib
import os
from typing import Sequence, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


# ----------------------------------------------------------------------------- process group
def initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if initialized() else 1


def rank() -> int:
    return dist.get_rank() if initialized() else 0


def is_main() -> bool:
    return rank() == 0


def env_world_size() -> int:
    """The number of processes torchrun started (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device_type: str) -> tuple[int, int, int]:
    """Join the process group that torchrun describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR/PORT): gloo on CPU, NCCL on CUDA (one GPU per process). Returns
    (rank, world size, local rank); a no-op returning (0, 1, 0) outside torchrun."""
    world = env_world_size()
    if world <= 1:
        return 0, 1, 0
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if not initialized():
        if device_type == "cuda":
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return rank(), world_size(), local


def shutdown() -> None:
    if initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


# ----------------------------------------------------------------------------- data slicing
def slice_bounds(n: int, world: int, r: int) -> tuple[int, int]:
    """[start, end) of process r's contiguous share of n items; the first n % world processes
    take one more item, so the slices in rank order cover 0..n exactly once."""
    base, extra = divmod(n, world)
    start = r * base + min(r, extra)
    return start, start + base + (1 if r < extra else 0)


def local_slice(items: Sequence[T]) -> Sequence[T]:
    start, end = slice_bounds(len(items), world_size(), rank())
    return items[start:end]


# ----------------------------------------------------------------------------- gathering
def _gather_padded(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """All processes' x (same trailing shape, any number of rows) concatenated in rank order."""
    world = world_size()
    n = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    sizes = [int(s) for s in sizes]
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[:x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes)]), sizes


class _GatherWithGrad(torch.autograd.Function):
    """Forward: the rank-order concatenation. Backward: the rows of this process only, since
    every process computes the same loss and back-propagates its own rows."""

    @staticmethod
    def forward(ctx, x):
        out, sizes = _gather_padded(x.detach())
        r = rank()
        ctx.start = sum(sizes[:r])
        ctx.end = ctx.start + sizes[r]
        return out

    @staticmethod
    def backward(ctx, grad):
        return grad[ctx.start:ctx.end]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Rank-order concatenation of every process's rows. If x requires grad, the result is
    differentiable and routes gradient back to x's rows only. Identity for one process."""
    if world_size() == 1:
        return x
    if x.requires_grad:
        return _GatherWithGrad.apply(x)
    with torch.no_grad():
        return _gather_padded(x)[0]


def local_rows(x: torch.Tensor, n_local: int) -> torch.Tensor:
    """This process's rows of a gathered tensor whose processes contributed `n_local` rows each
    in the layout of `slice_bounds` over the gathered length (used for GradCache's cache)."""
    if world_size() == 1:
        return x
    start, end = slice_bounds(x.shape[0], world_size(), rank())
    assert end - start == n_local, (start, end, n_local)
    return x[start:end]


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Process `src`'s x in every process (e.g. one FANoise draw shared by all). Identity for one
    process."""
    if world_size() == 1:
        return x
    x = x.contiguous()
    dist.broadcast(x, src)
    return x


def all_gather_floats(values: Sequence[float]) -> list[list[float]]:
    """Every process's list of floats (same length everywhere), in rank order."""
    if world_size() == 1:
        return [list(values)]
    t = torch.tensor(list(values), dtype=torch.float64, device=_collective_device())
    parts = [torch.zeros_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return [p.cpu().tolist() for p in parts]


def _collective_device() -> torch.device:
    """NCCL only moves CUDA tensors; gloo moves CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_object(obj) -> list:
    if world_size() == 1:
        return [obj]
    out: list = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


# ----------------------------------------------------------------------------- gradients
def all_reduce_grads(params: Sequence[torch.nn.Parameter]) -> None:
    """SUM every parameter's gradient over the processes in one flattened all-reduce. Called
    once per optimizer update, after the last backward. Parameters without a gradient (e.g. an
    unused pooler) keep none, as in one process, so AdamW skips them alike; every process runs
    the same code on its slice, so the set of parameters with a gradient is the same in all."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


# ----------------------------------------------------------------------------- checks
def fingerprint(tensors: Sequence[torch.Tensor | None]) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is None:
            h.update(b"none")
        else:
            t = t.detach().cpu().contiguous()
            h.update(str((tuple(t.shape), t.dtype)).encode())
            h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def assert_identical(tensors: Sequence[torch.Tensor | None], what: str) -> None:
    """Raise if `tensors` differ (bit for bit) between processes, e.g. the memory banks."""
    if world_size() == 1:
        return
    prints = all_gather_object(fingerprint(tensors))
    if len(set(prints)) != 1:
        raise RuntimeError(f"{what} differ between processes: {prints}")


__all__ = ["all_gather_floats", "all_gather_object", "all_reduce_grads", "assert_identical", "barrier",
           "broadcast", "env_world_size", "fingerprint", "gather", "init_from_env", "initialized", "is_main",
           "local_rows", "local_slice", "rank", "shutdown", "slice_bounds", "world_size"]
