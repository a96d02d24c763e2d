"""pipeline.evaluation.scorings.qbnorm: QB-Norm against a dynamic inverted softmax computed by hand;
its setting and its temperature check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.core import eval_params as E
from pipeline.core.common import PipelineError
from pipeline.evaluation.scorings import expand, from_row
from pipeline.evaluation.scorings.qbnorm import QBNorm
from tests.evaluation.test_querybank import flat, make_inputs


def test_qbnorm_equals_hand_computed_dynamic_inverted_softmax():
    docs = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]])
    bank = np.array([[0.9, 0.1], [0.1, 0.9]])         # top-1 documents 0 and 1: A = {0, 1}
    test = np.array([[1.0, 0.2],                       # top-1 doc 0, in A: normalised
                     [0.5, 0.7],                       # top-1 doc 2, not in A: raw scores
                     [0.2, 1.0]])                      # top-1 doc 1, in A: normalised
    beta = 0.5
    inputs = make_inputs(docs, bank, test, {"scorings": ["qbnorm"], "qbnorm": {"beta": [beta]}})
    scoring = expand(["qbnorm"], [0.25], inputs.params)[0]
    scoring.prepare(inputs)
    scores, rows = next(scoring.rankings(flat(docs), inputs, 4))

    def dot(a, b):
        return sum(x * y for x, y in zip(a, b))

    active = {max(range(4), key=lambda d: dot(r, docs[d])) for r in bank}
    assert active == {0, 1}
    for i, q in enumerate(test):
        raw = [dot(q, d) for d in docs]
        if max(range(4), key=lambda d: raw[d]) in active:
            want = [math.exp(raw[d] / beta) / sum(math.exp(dot(r, docs[d]) / beta) for r in bank) for d in range(4)]
        else:
            want = raw
        order = sorted(range(4), key=lambda d: (-want[d], d))
        assert rows[i].tolist() == order, i
        np.testing.assert_allclose(scores[i], [want[d] for d in order], rtol=1e-12, atol=0)
    # Query 2 fell back to its raw scores; the other two moved: doc 3 (far from the bank) rises.
    np.testing.assert_allclose(scores[1], np.sort(test[1] @ docs.T)[::-1], rtol=0, atol=1e-12)
    assert scoring.details(inputs)["activated_queries"] == 2
    assert rows[2].tolist() != np.argsort(-(test[2] @ docs.T), kind="stable").tolist()


def test_setting_names_and_check():
    params = E.EvalParams(scorings=["qbnorm"], qbnorm=E.QBNormParams(beta=[0.05, 1]))
    assert [s.name for s in expand(["qbnorm"], [0.25], params)] == ["qbnorm[beta=0.05]", "qbnorm[beta=1]"]
    row = from_row("qbnorm[beta=0.05]", float("nan"))
    assert isinstance(row, QBNorm) and row.beta == 0.05 and row.lam is None and row.slug == "qbnorm-beta0.05"
    with pytest.raises(ValueError, match="qbnorm: expected a setting 'beta=<number>'"):
        QBNorm(setting="0.05")
    with pytest.raises(PipelineError, match=r"qbnorm.beta\[1\]: expected an inverted-softmax temperature"):
        QBNorm.check(E.EvalParams(qbnorm=E.QBNormParams(beta=[0.05, 0])))
