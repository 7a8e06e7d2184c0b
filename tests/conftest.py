"""Fixtures shared by the test modules (the session set-up is in the root `conftest.py`)."""

import os

import pytest

from spec_impl.testing import digits_arrays

# The tests compile their XLA programs without LLVM's expensive optimisations (the flags of JAX's
# "disable most optimizations", for smoke tests): the same HLO, so the same values; the XLA tests
# take about three quarters of their time. The benchmarks (benchmarks/) compile as users do. XLA
# reads the variable at its first compilation, after this runs; command-line runs inherit it.
XLA_TEST_FLAGS = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
if XLA_TEST_FLAGS not in os.environ.get("XLA_FLAGS", ""):  # once, in nested pytest runs too
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {XLA_TEST_FLAGS}".strip()


@pytest.fixture(scope="module")
def digits(request):
    """`(x, y), (x_val, y_val)`: the first `N_TRAIN` (the test module's constant) embedded digits,
    flat (64 features), and the first 64 of the test split."""
    x, y, x_val, y_val = digits_arrays(request.module.N_TRAIN)
    return (x, y), (x_val, y_val)
