"""Checks the training engine makes before the first step, so bad data fail fast and clearly."""

import keras
import tensorflow as tf

from spec_impl._validation import shape_text

SPARSE_LOSSES = (keras.losses.SparseCategoricalCrossentropy,)


def _expected_input_shape(model):
    """The model's input shape without the batch axis, where the model declares one."""
    if isinstance(model, keras.Sequential) or type(model).__name__ == "Functional":
        inputs = model.inputs
        if len(inputs) == 1:
            return tuple(inputs[0].shape[1:])
    return getattr(model, "_built_input_shape", None)


def _is_sparse(loss):
    if isinstance(loss, (list, tuple)):  # one loss per output: labels are not checked
        return False
    loss = keras.losses.get(loss)
    name = getattr(loss, "__name__", "") or getattr(loss, "name", "")
    return isinstance(loss, SPARSE_LOSSES) or "sparse_categorical" in str(name)


def check_training_inputs(model, dataset, loss, num_classes=None):
    """Refuse data the model cannot train on, naming the expected and received values.

    Builds the model (one eager call on one sample, `training=False`) if it is not built yet.

    Raises:
        ValueError: elements are not `(x, y)` pairs, `x` does not have the model's input shape,
            or integer labels fall outside `[0, num_classes)` for a sparse loss.
    """
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(f"Expected a dataset of (x, y) pairs. Received elements: {spec}")
    x_spec, y_spec = spec
    expected = _expected_input_shape(model)
    if expected is not None and isinstance(x_spec, tf.TensorSpec):
        received = tuple(x_spec.shape[1:])
        if len(received) != len(expected) or any(
                e is not None and r is not None and e != r for e, r in zip(expected, received)):
            raise ValueError(
                f"The model expects inputs of shape {shape_text(expected)}. "
                f"Received: {shape_text(received)}"
            )
    first_x = next(iter(dataset.take(1)))[0]
    sample = tf.nest.map_structure(lambda t: t[:1], first_x)
    outputs = model(sample, training=False)  # builds the model if needed
    if not (_is_sparse(loss) and isinstance(y_spec, tf.TensorSpec) and y_spec.dtype.is_integer):
        return
    width = num_classes or int(tf.nest.flatten(outputs)[0].shape[-1])
    # One pass over the labels only, reduced inside tf.data (no Python loop over batches).
    dtype = y_spec.dtype
    low, high = dataset.map(lambda x, y: y).reduce(
        (tf.constant(dtype.max, dtype), tf.constant(dtype.min, dtype)),
        lambda acc, y: (tf.minimum(acc[0], tf.reduce_min(y)), tf.maximum(acc[1], tf.reduce_max(y))))
    low, high = int(low), int(high)
    if low < 0 or high >= width:
        raise ValueError(
            f"Labels must be class ids in [0, {width}) for this model's {width} outputs. "
            f"Received labels from {low} to {high}"
        )

