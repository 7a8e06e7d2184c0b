"""Argument and input checks shared by the package's layers and models, and the allowed values
that the command line needs before TensorFlow is imported (this module imports none)."""

import numbers

MODES = ("eager", "function", "xla")  # the training engine's execution modes
POLICIES = ("float32", "mixed_float16", "mixed_bfloat16")  # the Keras dtype policies offered
STRATEGIES = ("default", "mirrored", "multiworker")  # spec_impl.make_strategy's kinds


def check_positive_int(name, value):
    """Raise `ValueError` unless `value` is a positive integer, Python's or NumPy's (bools are
    refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"Expected a positive integer for `{name}`. Received: {name}={value!r}")
    return value


def check_choice(name, value, choices):
    """Raise `ValueError` unless `value` is one of `choices`."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"Expected `{name}` to be one of {listed}. Received: {name}={value!r}")
    return value


def shape_text(shape):
    """`(batch, 32, 32, 3)` for a shape without its batch axis; unknown sizes shown as `?`."""
    return "(batch, " + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def check_input_shape(model_name, expected, received):
    """Raise `ValueError` unless `received` (with batch axis) matches `expected` (without).

    `None` in `expected` matches any size. Rank and every known size are compared.
    """
    received = tuple(received)
    expected = tuple(expected)
    ok = len(received) == len(expected) + 1 and all(
        e is None or r is None or e == r for e, r in zip(expected, received[1:], strict=True)
    )
    if not ok:
        raise ValueError(
            f"{model_name} expects inputs of shape {shape_text(expected)}. "
            f"Received: shape={received}"
        )
