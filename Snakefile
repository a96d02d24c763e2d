# Memory-efficient InfoNCE training and Distribution-Normalized evaluation of dense retrievers.
#   snakemake --cores 2                          default experiment (config/config.yaml)
#   snakemake --cores 2 --configfile config/scifact.yaml
# Stages: data -> (hardneg) -> train -> index -> evaluate -> aggregate. Each rule is a thin
# call of `python -m pipeline.<stage>.<step>`; see ARCHITECTURE.md.
import sys
from pathlib import Path

sys.path.insert(0, workflow.basedir)

from pipeline.core import config as pcfg
from pipeline.core.layout import EXPORT_INFO, MODEL, MTEB_RESULT, REPORT_TABLES
from pipeline.results.plots import PLOTS


# The default experiment applies only when no --configfile is given: Snakemake would otherwise
# deep-merge the two files, silently adding the default's datasets and runs to another grid.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"



report: "report/workflow.rst"


CFG = pcfg.validate(config)
RESULTS = "results"

# Shell commands call `python`: make it the interpreter running Snakemake (the project's venv),
# not whatever python comes first on PATH.
shell.prefix(f"set -euo pipefail; export PATH={Path(sys.executable).parent}:$PATH; ")


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/index.smk"
include: "rules/evaluate.smk"
include: "rules/aggregate.smk"
include: "rules/export.smk"


rule all:
    input:
        str(LAYOUT.tables / "summary.csv"),
        str(LAYOUT.grid_stamp(GRID_DIGEST)),
    default_target: True


# On request (`snakemake ... export_all`): every model as a sentence-transformers folder + model card.
rule export_all:
    input:
        all_exports(),


# On request, or in `all` with evaluation.mteb: MTEB's evaluation of every exported model.
rule mteb_all:
    input:
        all_mteb(),

