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
