"""Test helpers shared by the test suite and usable by users' own tests."""

import numpy as np

DEFAULT_ATOL = 1e-6
DEFAULT_RTOL = 1e-6


def assert_allclose(actual, expected, atol=DEFAULT_ATOL, rtol=DEFAULT_RTOL, err_msg=""):
    """Assert that two array-likes (tensors included) are equal within tolerance.

    The defaults are tight; a caller that loosens them states why at the call site.
    """
    np.testing.assert_allclose(
        np.asarray(actual), np.asarray(expected), atol=atol, rtol=rtol, err_msg=err_msg
    )
