"""Fixtures shared by the test modules (the session set-up is in the root `conftest.py`)."""

import pytest

from spec_impl import load_dataset

VALIDATION_SAMPLES = 64


@pytest.fixture(scope="module")
def digits(request):
    """`(x, y), (x_val, y_val)`: the first `N_TRAIN` (the test module's constant) embedded digits,
    flat (64 features), and the first 64 of the test split."""
    (x, y), (x_val, y_val) = load_dataset("digits", input_shape=(64,))
    n = request.module.N_TRAIN
    return (x[:n], y[:n]), (x_val[:VALIDATION_SAMPLES], y_val[:VALIDATION_SAMPLES])
