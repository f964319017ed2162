"""The shared argument checks of tkmia._checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tkmia._checks import int_in


@given(st.integers(-50, 50), st.integers(-50, 50), st.one_of(st.none(), st.integers(-50, 50)))
def test_int_in_matches_its_definition(value, low, high):
    inside = value >= low and (high is None or value <= high)
    if inside:
        assert int_in(value, "n", low, high) == value
        assert type(int_in(np.int64(value), "n", low, high)) is int
    else:
        with pytest.raises(ValueError, match=rf"n={value}; expected an int"):
            int_in(value, "n", low, high)


@pytest.mark.parametrize("value", [True, False, 2.0, "2", None, torch.tensor(2.0)])
def test_int_in_refuses_bools_floats_and_others_with_a_value_error(value):
    with pytest.raises(ValueError, match=r"^n=.*; expected an int >= 0$"):
        int_in(value, "n", 0)


def test_int_in_takes_a_0d_integer_tensor():
    assert int_in(torch.tensor(3), "n", 1, 3) == 3
