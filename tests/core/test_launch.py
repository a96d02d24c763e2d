"""pipeline.core.launch: the train rule's command and GPU count from the recipe (one process runs
plain python; P processes run torchrun with the job's threads split between them)."""

from __future__ import annotations

from pipeline.core.launch import launcher, processes
from pipeline.core.params import ZERO_SHOT


def test_processes_count_only_trained_recipes():
    assert processes({"method": "inbatch"}) == 1
    assert processes({"method": "inbatch", "processes": None}) == 1
    assert processes({"method": "gradcache", "processes": 4}) == 4
    assert processes({"method": ZERO_SHOT, "processes": 4}) == 1  # a zero-shot job only records the model


def test_launcher_splits_the_threads_between_the_processes():
    assert launcher({"method": "inbatch"}, threads=8) == "python"
    assert launcher({"method": "inbatch", "processes": 2}, threads=8) == \
        "OMP_NUM_THREADS=4 python -m torch.distributed.run --standalone --nproc_per_node 2"
    assert launcher({"method": "inbatch", "processes": 4}, threads=2).startswith("OMP_NUM_THREADS=1 ")
