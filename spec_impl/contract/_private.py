"""Every private Keras and TensorFlow name the contract reads, in one place.

Keras has no public way to read the mask a call attached to its output, to list a layer's
sub-layers and seed generators recursively, or to count TensorFlow's traces of every function;
these are the names its own `run_layer_test` and TensorFlow's own tracing use. Each access is a
function here, so that a change in a new release breaks one line.
"""

import contextlib


def get_mask(tensor):
    """The Keras mask a layer attached to `tensor`, or `None`."""
    from keras.src.backend.common.masking import get_keras_mask

    return get_keras_mask(tensor)


def set_mask(tensor, mask):
    """Attach `mask` to the eager `tensor` as a masking layer's output would carry it."""
    from keras.src.backend.common.masking import set_keras_mask

    set_keras_mask(tensor, mask)


def sublayers(layer):
    """`layer` and every layer inside it, recursively (Keras's `_flatten_layers`)."""
    return list(layer._flatten_layers(include_self=True, recursive=True))


def seed_generators(layer):
    """The distinct `keras.random.SeedGenerator`s of `layer` and its sub-layers."""
    found = {}
    for sub in sublayers(layer):
        for generator in getattr(sub, "_seed_generators", ()):
            found[id(generator)] = generator
    return list(found.values())


@contextlib.contextmanager
def count_traces():
    """Count every graph TensorFlow traces for any `tf.function` inside the block.

    Yields a one-element list whose item is the running count. TensorFlow builds each traced
    graph in `tracing_compilation._create_concrete_function` (2.16 to 2.21), the one place every
    trace goes through.
    """
    from tensorflow.python.eager.polymorphic_function import tracing_compilation as tc

    original = tc._create_concrete_function
    count = [0]

    def counting(*args, **kwargs):
        count[0] += 1
        return original(*args, **kwargs)

    tc._create_concrete_function = counting
    try:
        yield count
    finally:
        tc._create_concrete_function = original


def global_seed_generator():
    """The `SeedGenerator` that `keras.random` draws from when given no seed."""
    from keras.src.random.seed_generator import global_seed_generator as found

    return found()


def custom_gradients(graph):
    """How many `tf.custom_gradient` functions `graph` runs (TensorFlow marks each with the
    op attribute `_gradient_op_type`)."""
    found = set()
    for op in graph.get_operations():
        try:
            found.add(op.get_attr("_gradient_op_type"))
        except ValueError:
            continue
    return len(found)


# TensorFlow's own words when an op has no version for a dtype: no kernel registered for the
# device (NotFoundError), or an op definition whose type list leaves it out (InvalidArgumentError).
NO_KERNEL = ("Could not find device for node", "is not in the list of allowed values")


def lacks_kernel(error):
    """Whether `error` is TensorFlow saying that an op has no version for the dtype on this
    device (3-D pooling in float64 or float16 on a CPU); its first line then, else `None`."""
    import tensorflow as tf

    if isinstance(error, (tf.errors.NotFoundError, tf.errors.InvalidArgumentError)):
        text = str(error)
        if any(phrase in text for phrase in NO_KERNEL):
            return text.strip().splitlines()[0][:160]
    return None
