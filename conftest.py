"""Shared pytest set-up: quiet TensorFlow, seeds, hypothesis profile, tolerance helper."""

import os

# Must be set before TensorFlow is imported anywhere in the session.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "spec_impl",
    deadline=None,  # the first TensorFlow call in an example traces a graph
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile("spec_impl")

SEED = 1234


@pytest.fixture
def seed():
    """Seed Python, NumPy and TensorFlow (and Keras) and return the seed."""
    import keras

    random.seed(SEED)
    np.random.seed(SEED)
    keras.utils.set_random_seed(SEED)  # also seeds tf.random
    return SEED


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Give each test fresh Keras layer names (`dense`, not `dense_37`)."""
    import keras

    keras.backend.clear_session()
    yield
