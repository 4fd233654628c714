"""Tests for pointset/_checks.py: the integer argument helper.

Oracle: hand-picked values; integers of any ``numbers.Integral`` type at or above the
minimum pass and come back as ``int``, everything else raises one wording.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from pointset._checks import check_int, check_positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_positive_ints_pass_and_come_back_as_int(value):
    out = check_positive_int(value, "k")
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value", [0, -2, True, False, 2.0, 1.5, "3", None, torch.tensor(2)])
def test_everything_else_is_rejected_with_the_value(value):
    with pytest.raises(
        ValueError, match=rf"^k must be a positive int, got {re.escape(repr(value))}$"
    ):
        check_positive_int(value, "k")


def test_other_minimum_has_its_own_wording():
    assert check_int(0, "pos_dim", minimum=0) == 0
    with pytest.raises(ValueError, match=r"^pos_dim must be an int >= 0, got -1$"):
        check_int(-1, "pos_dim", minimum=0)
