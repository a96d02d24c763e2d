"""Tests mirror the packages (issue #22): every module pipeline/<package>/.../<module>.py has its
own tests/<package>/.../test_<module>.py. A module that cannot have one is listed here with its
reason, so that a module without tests is a decision rather than an oversight."""

from __future__ import annotations

from pathlib import Path

from conftest import REPO

# "pipeline/<path>.py" -> why it has no test file of its own. Package __init__ modules and
# __main__ entry points are not listed: an __init__ is tested through its package's modules.
EXCEPTIONS: dict[str, str] = {}


def mirror(module: Path) -> Path:
    """pipeline/<package>/.../<module>.py -> tests/<package>/.../test_<module>.py"""
    relative = module.relative_to(REPO / "pipeline")
    return REPO / "tests" / relative.parent / f"test_{relative.name}"


def modules() -> list[Path]:
    return sorted(p for p in (REPO / "pipeline").rglob("*.py") if p.stem not in ("__init__", "__main__"))


def test_every_module_has_its_own_test_file():
    missing = [str(m.relative_to(REPO)) for m in modules()
               if not mirror(m).is_file() and str(m.relative_to(REPO)) not in EXCEPTIONS]
    assert not missing, ("modules without tests/<package>/.../test_<module>.py (write one, or list the module "
                         f"in EXCEPTIONS with the reason): {missing}")


def test_every_exception_names_a_module_and_a_reason():
    for name, reason in EXCEPTIONS.items():
        assert (REPO / name).is_file(), f"{name}: listed in EXCEPTIONS but no such module"
        assert not mirror(REPO / name).is_file(), f"{name}: has a test file now; drop it from EXCEPTIONS"
        assert reason.strip(), f"{name}: give the reason it has no test file"


def test_the_mirror_of_a_module():
    names = {str(m.relative_to(REPO)) for m in modules()}
    assert "pipeline/evaluation/scorings/dn.py" in names and "pipeline/sources/__init__.py" not in names
    assert mirror(REPO / "pipeline/evaluation/scorings/dn.py") == REPO / "tests/evaluation/scorings/test_dn.py"
