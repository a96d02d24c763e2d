"""pipeline.core.registry: the one registry behind training methods, scorings and protocols. A
package's modules (all but `base`) are imported on first lookup, a registered class gets its name,
an unknown name is an error that names the config key and lists what is registered, and `lookup`
reaches a stage's object by "module:name" without core importing the stage."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.core.common import PipelineError
from pipeline.core.registry import Registry, lookup


def fresh(package: str = "pipeline.evaluation.protocols") -> Registry:
    return Registry(package, "widget", "widgets", lambda cls, name: setattr(cls, "name", name))


def test_register_names_the_class_and_get_returns_it():
    registry = fresh()

    @registry.register("alpha")
    class Alpha:
        pass

    assert Alpha.name == "alpha"
    assert registry.get("alpha") is Alpha
    assert registry.names() == ["alpha"]


def test_unknown_name_names_the_key_and_lists_the_registered_ones():
    registry = fresh()
    for name in ("zeta", "alpha"):
        registry.register(name)(type(name.title(), (), {}))
    with pytest.raises(PipelineError) as err:
        registry.get("gamma")
    message = str(err.value)
    assert message.startswith("widgets: unknown widget 'gamma'")
    assert "['alpha', 'zeta']" in message  # sorted, so the message is stable


def test_registering_a_name_twice_raises():
    registry = fresh()
    registry.register("alpha")(type("First", (), {}))
    with pytest.raises(PipelineError, match="alpha"):
        registry.register("alpha")(type("Second", (), {}))


def test_real_registries_reject_unknown_names_with_their_entries():
    from pipeline.evaluation.protocols import available_protocols, get_protocol
    from pipeline.evaluation.scorings import available_scorings
    from pipeline.training.methods import available, get_method

    assert {"qrels", "answers", "msmarco"} <= set(available_protocols())
    assert {"inbatch", "gradaccum", "contaccum", "gradcache", "sogclr"} <= set(available())
    assert "dot" in available_scorings()
    with pytest.raises(PipelineError) as err:
        get_protocol("bleu")
    assert "protocol: unknown evaluation protocol 'bleu'" in str(err.value)
    assert all(repr(name) in str(err.value) for name in available_protocols())
    with pytest.raises(PipelineError) as err:
        get_method("sgd")
    assert "method: unknown training method 'sgd'" in str(err.value)
    assert "'contaccum'" in str(err.value)


def test_first_lookup_imports_every_module_but_base():
    # In a fresh process: before any lookup no protocol module is imported; afterwards all are,
    # each registered under its name.
    code = (
        "import sys\n"
        "from pipeline.evaluation.protocols import _REGISTRY, get_protocol\n"
        "mods = lambda: sorted(m for m in sys.modules if m.startswith('pipeline.evaluation.protocols.'))\n"
        "before = mods()\n"
        "get_protocol('qrels')\n"
        "print(before, mods(), sorted(_REGISTRY.classes))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, names = out.strip().split("] [")
    assert before == "['pipeline.evaluation.protocols.base'"  # the package's own import of base
    assert "'pipeline.evaluation.protocols.qrels'" in after and "'pipeline.evaluation.protocols.answers'" in after
    assert "'qrels'" in names and "'msmarco'" in names and "'base'" not in names


def test_lookup_reaches_a_stage_object_by_name():
    from pipeline.training.methods import available

    assert lookup("pipeline.training.methods:available") is available
    with pytest.raises(AttributeError):
        lookup("pipeline.training.methods:no_such_thing")
    with pytest.raises(ModuleNotFoundError):
        lookup("pipeline.no_such_stage:available")


def test_the_same_class_met_twice_keeps_its_registration():
    """A module imported a second time re-runs its decorator with an identical class: not a clash."""
    registry = fresh()
    first = type("Same", (), {"__module__": "plugins.same"})
    again = type("Same", (), {"__module__": "plugins.same"})
    registry.register("alpha")(first)
    assert registry.register("alpha")(again) is again
