"""How the train rule starts a training job: plain python for one process, torchrun for P > 1
(`processes: P` in the recipe). Kept free of torch so that parsing the workflow stays fast."""

from __future__ import annotations

from pipeline.core.config import ZERO_SHOT


def processes(recipe: dict) -> int:
    """Training processes of a resolved recipe (1 for zero-shot, which only records the model).
    This is also the number of GPUs the train job asks the cluster for."""
    if recipe.get("method") == ZERO_SHOT:
        return 1
    return int(recipe.get("processes") or 1)


def launcher(recipe: dict, threads: int) -> str:
    """The command that `-m pipeline.training.train ...` follows; the job's threads are split between the
    processes (OMP_NUM_THREADS), one GPU each on CUDA."""
    p = processes(recipe)
    if p == 1:
        return "python"
    return (f"OMP_NUM_THREADS={max(1, int(threads) // p)} python -m torch.distributed.run --standalone "
            f"--nproc_per_node {p}")


__all__ = ["launcher", "processes"]
