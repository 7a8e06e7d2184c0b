"""Shared pytest set-up: quiet TensorFlow, seeds, hypothesis profile, tolerance helper."""

import os

# Must be set before TensorFlow is imported anywhere in the session.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import random
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "spec_impl",
    deadline=None,  # the first TensorFlow call in an example traces a graph
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# CI draws the same examples every run (a failure there is a change's, not a new draw's); a
# developer's run draws new ones, to find what a fixed set misses.
settings.register_profile("ci", parent=settings.get_profile("spec_impl"), derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "spec_impl")

SEED = 1234
# The distributed specification (tests/distributed) needs the CPU split into logical devices,
# which can only be done before TensorFlow initialises them and which changes a few of
# TensorFlow's single-device behaviours (an empty batch through Conv2D fails differently). It
# therefore runs in its own pytest process, with SPEC_IMPL_CPU_DEVICES set, started by
# tests/test_distributed_suite.py; the main session leaves the folder alone.
CPU_DEVICES_VARIABLE = "SPEC_IMPL_CPU_DEVICES"
DISTRIBUTED_FOLDER = "distributed"


def pytest_sessionstart(session):
    """Split the CPU into `$SPEC_IMPL_CPU_DEVICES` logical devices before TensorFlow starts."""
    count = os.environ.get(CPU_DEVICES_VARIABLE)
    if count:
        from spec_impl.trainer.distribute import cpu_devices

        cpu_devices(int(count))


def pytest_ignore_collect(collection_path, config):
    if collection_path.name == DISTRIBUTED_FOLDER and not os.environ.get(CPU_DEVICES_VARIABLE):
        return True
    return None


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
    """Give each test fresh Keras layer names (`dense`, not `dense_37`).

    Without a `gc.collect()` per test (`free_memory=False`): on a heap holding TensorFlow's
    graphs it takes about half a second, a fifth of a short test; Python's own collector still
    runs, and the peak memory of a run grows by a few percent."""
    import keras

    keras.backend.clear_session(free_memory=False)
    yield


# System tools some tests need, with the command that installs each. A test that needs one is
# skipped, with that command, where the tool is missing; `.ci/run` installs them and sets
# SPEC_IMPL_REQUIRE_TOOLS so that a missing tool fails the run instead of skipping silently.
SYSTEM_TOOLS = {"dot": "apt-get install graphviz  (Debian / Ubuntu; brew install graphviz on macOS)"}


@pytest.fixture
def graphviz():
    """Skip (or, under CI, fail) unless Graphviz's `dot`, which `plot_model` runs, is on PATH."""
    _require_tool("dot")


@pytest.fixture(scope="session")
def tf_keras():
    """Skip (or, under CI, fail) unless tf-keras, the `legacy` extra, is installed."""
    require_module("tf_keras")


def require_module(name):
    """Skip (or, under CI, fail) unless the optional Python package `name` is installed."""
    from importlib.util import find_spec

    if find_spec(name) is not None:
        return
    _skip_or_fail(f"the optional package {name} is not installed; install it with: "
                  f"{OPTIONAL_MODULES[name]}")


OPTIONAL_MODULES = {"tf_keras": 'pip install -e ".[legacy]"'}


def _require_tool(name):
    if shutil.which(name):
        return
    _skip_or_fail(f"`{name}` is not on PATH; install it with: {SYSTEM_TOOLS[name]}")


def _skip_or_fail(reason):
    """Skip with `reason`, or fail under SPEC_IMPL_REQUIRE_TOOLS (CI installs everything)."""
    if os.environ.get("SPEC_IMPL_REQUIRE_TOOLS"):
        pytest.fail(f"SPEC_IMPL_REQUIRE_TOOLS is set and {reason}")
    pytest.skip(reason)
