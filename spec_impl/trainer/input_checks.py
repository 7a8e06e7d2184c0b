"""Checks the training engine makes before the first step, so bad data fail fast and clearly."""

import keras
import tensorflow as tf

from spec_impl._validation import shape_text

SPARSE_LOSSES = (keras.losses.SparseCategoricalCrossentropy,)


def _expected_input_shape(model):
    """The model's input shape without the batch axis, where the model declares one (a
    `Sequential` model without an input shape declares none until its first batch): its
    `inputs`, or the public `built_input_shape` a model that builds on its first call records
    (the Inception family does)."""
    if isinstance(model, keras.Sequential) and not model.built:
        return None
    if isinstance(model, keras.Sequential) or type(model).__name__ == "Functional":
        inputs = model.inputs
        if len(inputs) == 1:
            return tuple(inputs[0].shape[1:])
    return getattr(model, "built_input_shape", None)


def is_sparse(loss):
    """Whether `loss` (an object, a name or a function) takes integer class ids."""
    if isinstance(loss, (list, tuple, dict)):  # one loss per output: labels are not checked
        return False
    loss = keras.losses.get(loss)
    name = getattr(loss, "__name__", "") or getattr(loss, "name", "")
    return isinstance(loss, SPARSE_LOSSES) or "sparse_categorical" in str(name)


def _x_y(spec):
    """`(x_spec, y_spec)` of a batch spec `(x,)`, `(x, y)`, `(x, y, sample_weight)` or `x`
    alone (data without targets, as `fit(x)` takes them: `y_spec` is `None`)."""
    if not isinstance(spec, tuple):
        return spec, None
    if not 1 <= len(spec) <= 3:
        raise ValueError(f"Expected batches of (x, y) or (x, y, sample_weight). "
                         f"Received elements: {spec}")
    x, y, _ = keras.utils.unpack_x_y_sample_weight(spec)
    return x, y


def check_input_shape(model, element_spec):
    """Raise `ValueError` unless the batches' `x` has the model's declared input shape."""
    x_spec, _ = _x_y(element_spec)
    expected = _expected_input_shape(model)
    if expected is not None and isinstance(x_spec, tf.TensorSpec):
        received = tuple(x_spec.shape[1:])
        if len(received) != len(expected) or any(
                e is not None and r is not None and e != r for e, r in zip(expected, received, strict=True)):
            raise ValueError(
                f"The model expects inputs of shape {shape_text(expected)}. "
                f"Received: {shape_text(received)}"
            )


def check_labels(model, batches, loss, num_classes=None):
    """Refuse integer labels outside `[0, num_classes)` for a sparse loss, in one `tf.data`
    reduce over the labels (no Python loop over batches).

    `num_classes` defaults to the model's output width. Only data that can be read twice
    without losing a batch are checked: arrays and finite datasets, not generators.

    Raises:
        ValueError: a label out of range, naming the range and the labels received.
    """
    _, y_spec = _x_y(batches.dataset.element_spec)
    if not (batches.rereadable and is_sparse(loss) and isinstance(y_spec, tf.TensorSpec)
            and y_spec.dtype.is_integer):
        return
    x_spec, _ = _x_y(batches.dataset.element_spec)
    symbolic = tf.nest.map_structure(lambda s: keras.KerasTensor(s.shape, s.dtype.name), x_spec)
    width = num_classes or int(tf.nest.flatten(model.compute_output_spec(symbolic))[0].shape[-1])
    dtype = y_spec.dtype
    low, high = batches.dataset.map(lambda *element: element[1]).reduce(
        (tf.constant(dtype.max, dtype), tf.constant(dtype.min, dtype)),
        lambda acc, y: (tf.minimum(acc[0], tf.reduce_min(y)), tf.maximum(acc[1], tf.reduce_max(y))))
    low, high = int(low), int(high)
    if low < 0 or high >= width:
        raise ValueError(
            f"Labels must be class ids in [0, {width}) for this model's {width} outputs. "
            f"Received labels from {low} to {high}"
        )


def check_old_call(model, x, y):
    """Refuse `train(model, (x, y))`, the form before `train` took `fit`'s arguments, where the
    model takes one input (a pair cannot be its `x`), naming the form to use."""
    if y is not None or not isinstance(x, (tuple, list)) or len(x) not in (2, 3):
        return
    single_input = isinstance(model, keras.Sequential)
    if not single_input and model.built:
        try:
            single_input = len(model.inputs) == 1
        except (AttributeError, ValueError):  # a subclassed model declares no inputs
            return
    if single_input:
        raise ValueError(
            f"`train` takes `fit`'s arguments: train(model, x, y, ...), not train(model, (x, y)). "
            f"Received: x=a {type(x).__name__} of {len(x)} items and y=None for a model with "
            f"one input")
