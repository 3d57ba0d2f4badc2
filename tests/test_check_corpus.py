"""Researchers' own derivations, outside the registry: right ones pass in float32 and float64
at several points (zero false alarms), and a wrong one of each fails.

Each function comes with its hand-derived Jacobian (numerator layout) and a typical slip.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

from mcjax import check_cases

sys.path.insert(0, str(Path(__file__).parent / "data"))
from derivations import (  # noqa: E402
    _points,
    attention,
    d_attention,
    d_attention_wrong,
    d_frobenius,
    d_frobenius_wrong,
    d_gru,
    d_gru_wrong,
    d_layer_norm,
    d_layer_norm_wrong,
    d_logsumexp,
    d_logsumexp_wrong,
    d_softmax,
    d_softmax_wrong,
    frobenius,
    gru,
    layer_norm,
    logsumexp,
    softmax,
)

CORPUS = {
    "softmax": (softmax, d_softmax, d_softmax_wrong),
    "layer norm": (layer_norm, d_layer_norm, d_layer_norm_wrong),
    "frobenius": (frobenius, d_frobenius, d_frobenius_wrong),
    "gru": (gru, d_gru, d_gru_wrong),
    "attention": (attention, d_attention, d_attention_wrong),
    "logsumexp +1000": (logsumexp, d_logsumexp, d_logsumexp_wrong),
    "logsumexp -1000": (logsumexp, d_logsumexp, d_logsumexp_wrong),
}
POINTS = 3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_right_derivatives_pass_and_wrong_ones_fail(dtype):
    rng = np.random.default_rng(11)
    cases, labels = [], []
    for name, (f, right, wrong) in CORPUS.items():
        for q in range(POINTS):
            args = _points(name, rng, dtype)
            cases += [(f, right, args, 0), (f, wrong, args, 0)]
            labels += [(name, q, "right"), (name, q, "wrong")]
    reports = check_cases(cases)
    false_alarms = [(label, str(r)) for label, r in zip(labels, reports)
                    if label[2] == "right" and not r.ok]
    missed = [label for label, r in zip(labels, reports) if label[2] == "wrong" and r.ok]
    assert not false_alarms, f"{len(false_alarms)} false alarms:\n{false_alarms[0][1]}"
    assert not missed, missed
