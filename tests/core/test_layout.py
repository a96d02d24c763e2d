"""Results scoped per experiment (pipeline.core.layout): shared, recipe-independent folders and every
recipe-dependent path under results/<experiment>/."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core import config as pcfg
from pipeline.core.common import PipelineError
from pipeline.core.layout import Layout

CONFIG = {"experiment": "exp-a", "datasets": {"mini": {"source": "embedded"}}, "seeds": [1, 2],
          "runs": {"zeroshot": {"method": "none"}, "dpr-8": {"method": "inbatch", "batch_size": 8}}}


def test_recipe_dependent_paths_live_under_the_experiment_and_data_is_shared():
    a, b = Layout("results", "exp-a"), Layout("results", "exp-b")
    for path in (lambda lay: lay.model("mini", "dpr-8", "seed1"), lambda lay: lay.index("mini", "dpr-8", "seed1"),
                 lambda lay: lay.shards("mini", "dpr-8", "seed1"), lambda lay: lay.shard_plan("mini"),
                 lambda lay: lay.eval("mini", "dpr-8", 1), lambda lay: lay.tables, lambda lay: lay.plots,
                 lambda lay: lay.logs, lambda lay: lay.report, lambda lay: lay.mlflow_artifacts):
        assert path(a) != path(b)
        assert path(a).is_relative_to("results/exp-a") and path(b).is_relative_to("results/exp-b")
    for path in (lambda lay: lay.data("mini"), lambda lay: lay.hardneg("mini"), lambda lay: lay.mlflow_store,
                 lambda lay: lay.downloads, lambda lay: lay.shared_logs, lambda lay: lay.reference("x")):
        assert path(a) == path(b) and not path(a).is_relative_to("results/exp-a")
    assert Layout.for_config(pcfg.validate(CONFIG)).tables == Path("results/exp-a/tables")


def test_an_experiment_may_not_take_a_shared_folder_name():
    with pytest.raises(PipelineError, match=r"config key experiment: 'data' names a folder every experiment shares"):
        pcfg.validate({**CONFIG, "experiment": "data"})
