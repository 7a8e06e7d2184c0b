"""Fixtures shared by the test modules (the session set-up is in the root `conftest.py`)."""

import pytest

from spec_impl.testing import digits_arrays


@pytest.fixture(scope="module")
def digits(request):
    """`(x, y), (x_val, y_val)`: the first `N_TRAIN` (the test module's constant) embedded digits,
    flat (64 features), and the first 64 of the test split."""
    x, y, x_val, y_val = digits_arrays(request.module.N_TRAIN)
    return (x, y), (x_val, y_val)
