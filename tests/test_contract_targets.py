"""What the contract reads from a component's declarations (`spec_impl.contract.facts`) and the
targets it makes for a loss or metric: properties over shapes, kinds and signatures."""

import keras
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spec_impl.contract import TARGETS, generate_targets
from spec_impl.contract.facts import InputsError, call_style, target_kind

SHAPES = st.lists(st.integers(1, 5), min_size=1, max_size=3).map(tuple)


@given(shape=SHAPES, target=st.sampled_from(sorted(set(TARGETS) - {"sequence"})),
       seed=st.integers(0, 2**16))
def test_generated_targets_are_valid_for_their_kind(shape, target, seed):
    if target in ("categorical", "sparse", "classes") and shape[-1] < 2:
        with pytest.raises(ValueError, match=f"{target} targets need at least 2 classes"):
            generate_targets(shape, target, batch=4, seed=seed)
        return
    arrays = generate_targets(shape, target, batch=4, seed=seed)
    if target == "values":
        assert len(arrays) == 1 and arrays[0].shape == (4, *shape)
        return
    y_true, y_pred = arrays
    classes = shape[-1]
    if target in ("sparse", "classes"):
        assert y_true.shape == (4, *shape[:-1]) and y_true.dtype.kind == "i"
        assert y_true.min() >= 0 and y_true.max() < classes
    else:
        assert y_true.shape == y_pred.shape == (4, *shape)
    if target in ("categorical", "sparse"):
        np.testing.assert_allclose(y_pred.sum(-1), 1.0, rtol=1e-6)  # rows of a distribution
    if target == "categorical":
        assert set(np.unique(y_true)) <= {0.0, 1.0} and np.all(y_true.sum(-1) == 1)
    if target == "binary":
        assert set(np.unique(y_true)) <= {0.0, 1.0}
    if target in ("probability", "binary"):
        assert 0 <= y_true.min() and y_true.max() <= 1 and 0 < y_pred.min() and y_pred.max() < 1


@given(steps=st.integers(2, 8), classes=st.integers(2, 6))
def test_sequence_targets_are_label_ids_of_half_the_steps(steps, classes):
    y_true, y_pred = generate_targets((steps, classes), "sequence")
    assert y_true.shape == (4, steps // 2) and 1 <= y_true.min() and y_true.max() < classes
    np.testing.assert_allclose(y_pred.sum(-1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("make, kind", [
    (keras.losses.SparseCategoricalCrossentropy, "sparse"),
    (keras.losses.CategoricalHinge, "categorical"),
    (keras.losses.BinaryFocalCrossentropy, "binary"),
    (keras.losses.MeanSquaredError, "probability"),
    (keras.metrics.SparseTopKCategoricalAccuracy, "sparse"),
    (keras.metrics.Mean, "values"),
    (lambda: keras.metrics.MeanMetricWrapper(keras.losses.categorical_crossentropy), "categorical"),
])
def test_a_loss_or_metric_declares_its_targets_by_its_name_and_signature(make, kind):
    assert target_kind(make()) == kind


def _layer_with(signature):
    namespace = {}
    exec(f"def call{signature}:\n    return None\n", namespace)  # a signature under test
    return type("Probe", (keras.layers.Layer,), {"call": namespace["call"]})()


@given(required=st.integers(1, 3), optional=st.integers(0, 2), given_=st.integers(1, 6))
def test_inputs_go_to_calls_data_arguments_or_are_refused(required, optional, given_):
    names = [f"a{i}" for i in range(required)] + [f"b{i}=None" for i in range(optional)]
    layer = _layer_with(f"(self, {', '.join(names)}, training=None, mask=None, flag=False)")
    inputs = [np.zeros((4, 2))] * given_ if given_ > 1 else np.zeros((4, 2))
    positional = required + optional  # `flag=False` is no data argument, nor `training`, `mask`
    if given_ == 1:
        fits = "one" if required == 1 else None
    elif positional == 1:
        fits = "one"  # one argument, which takes the list (a merge layer)
    else:
        fits = "positional" if required <= given_ <= positional else None
    if fits:
        assert call_style(layer, inputs) == fits
    else:
        with pytest.raises(InputsError, match=r"Probe\.call\(a0"):
            call_style(layer, inputs)
