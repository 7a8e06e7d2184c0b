"""The contract's checks of a loss or a metric."""

import json
import os

import numpy as np

from spec_impl.contract.core import Failure, Skip, check
from spec_impl.contract.numeric_checks import (
    COMPILED_RTOL,
    FD_PROBES,
    _fd_failure,
    _matches_at_some_step,
)
from spec_impl.contract.saving_checks import assert_outputs_equal, missing_arguments, run_child

NEW_BATCHES = 3


def _evaluate(ctx, obj, y_true, y_pred):
    """A loss's value, or a fresh metric's result after one update."""
    if ctx.kind == "loss":
        return obj(y_true, y_pred)
    obj.reset_state()
    obj.update_state(y_true, y_pred)
    return obj.result()


@check("call", kinds=("loss", "metric"), needs=("construct",),
       why="on (y_true, y_pred) a loss gives a finite float32 scalar; a metric's result after "
           "one update is finite",
       fix="reduce the loss to a scalar (Keras's `Loss.__call__` does so for a `call` returning "
           "per-example values)")
def call(ctx):
    import keras

    y_true, y_pred = ctx.inputs
    value = _evaluate(ctx, ctx.obj, y_true, y_pred)
    array = np.asarray(value)
    if ctx.kind == "loss" and array.shape != ():
        raise Failure(f"the loss is shaped {array.shape}, not a scalar")
    if not np.all(np.isfinite(array)):
        raise Failure(f"the value {array} is not finite")
    dtype = keras.backend.standardize_dtype(value.dtype)
    if ctx.kind == "loss" and dtype != "float32":
        raise Failure(f"the loss is {dtype} under the default policy, not float32")
    ctx.cache["value"] = array
    return f"{array.tolist() if array.size < 5 else array.shape}"


@check("state_at_construction", kinds=("metric",), needs=("construct",),
       why="a metric's state variables exist once it is constructed (Keras builds metrics "
           "before any update, and a strategy must see them in its scope)",
       fix="create the state with `self.add_variable` in `__init__`")
def state_at_construction(ctx):
    obj = ctx.make()
    if not obj.variables:
        raise Failure(f"{type(obj).__name__} has no variables after construction")
    count = len(obj.variables)
    y_true, y_pred = ctx.inputs
    obj.update_state(y_true, y_pred)
    if len(obj.variables) != count:
        raise Failure(f"`update_state` created variables ({count} -> {len(obj.variables)})")
    return f"{count} variables"


@check("streaming", kinds=("metric",), needs=("call", "state_at_construction"),
       why="updating on two halves of a batch gives the result of one update on the whole, and "
           "`reset_state` returns to a fresh metric's result",
       fix="accumulate sums and counts in variables and divide in `result`, not in `update_state`")
def streaming(ctx):
    y_true, y_pred = ctx.inputs
    half = len(y_true) // 2
    obj = ctx.make()
    fresh = np.asarray(obj.result())
    obj.update_state(y_true[:half], y_pred[:half])
    obj.update_state(y_true[half:], y_pred[half:])
    assert_outputs_equal(obj.result(), ctx.cache["value"], "two half-batch updates against one",
                         COMPILED_RTOL)
    obj.reset_state()
    assert_outputs_equal(obj.result(), fresh, "the result after `reset_state` against a fresh metric")
    return "halves = whole; reset = fresh"


@check("config_round_trip", kinds=("loss", "metric"), needs=("call",),
       why="`from_config(get_config())` rebuilds an object that gives the same values",
       fix="return every `__init__` argument from `get_config`")
def config_round_trip(ctx):
    obj = ctx.obj
    if not hasattr(obj, "get_config"):
        raise Skip("a plain function has no config")
    config = obj.get_config()
    try:
        clone = type(obj).from_config(config)
    except TypeError as error:
        clone, failed = None, error
    y_true, y_pred = ctx.inputs
    if clone is None or clone.get_config() != config or not np.allclose(
            np.asarray(_evaluate(ctx, clone, y_true, y_pred)), ctx.cache["value"], rtol=0, atol=0):
        missing = missing_arguments(obj, config)
        names = ", ".join(f"`{m}`" for m in missing)
        if missing:
            raise Failure(f"`get_config` does not return {names}: `from_config` builds a different "
                          f"{type(obj).__name__}", f"add {names} to `get_config`")
        raise Failure(f"`from_config(get_config())` builds a different {type(obj).__name__}"
                      + (f" ({failed})" if clone is None else ""))
    return f"{len(config)} config entries"


@check("keras_reload", kinds=("loss", "metric"), needs=("config_round_trip",),
       why="the object serializes as a `.keras` file stores a compiled loss or metric, and "
           "deserializes without `custom_objects` to one that gives the same values",
       fix="register it with `@keras.saving.register_keras_serializable(package=...)`")
def keras_reload(ctx):
    import keras

    text = json.dumps(keras.saving.serialize_keras_object(ctx.obj))
    path = os.path.join(ctx.folder, "component.json")
    with open(path, "w") as f:
        f.write(text)
    ctx.cache["json_file"] = path
    try:
        clone = keras.saving.deserialize_keras_object(json.loads(text))
    except Exception as error:
        raise Failure(f"it deserializes only with `custom_objects`: {str(error)[:200]}") from error
    y_true, y_pred = ctx.inputs
    assert_outputs_equal(_evaluate(ctx, clone, y_true, y_pred), ctx.cache["value"], "the reloaded object")
    return "serialized and deserialized"


@check("fresh_process_reload", kinds=("loss", "metric"), needs=("keras_reload",),
       why="it deserializes in a new Python process that imports only its module",
       fix="register it when its module is imported (decorate it at module level)")
def fresh_process_reload(ctx):
    outputs = run_child(ctx, ctx.kind, ctx.cache["json_file"])
    assert_outputs_equal(outputs, ctx.cache["value"], "the object deserialized in a fresh process")
    return f"only {ctx.target.split(':')[0]} imported"


@check("trace_bound", kinds=("loss", "metric"), needs=("call",),
       why="in a tf.function, new batches of the same shape trace no new graph",
       fix="keep values that change between calls in tensors or variables")
def trace_bound(ctx):
    import tensorflow as tf

    from spec_impl.contract import _private

    obj = ctx.make()
    fn = tf.function(obj.__call__ if ctx.kind == "loss" else obj.update_state)
    rng = np.random.default_rng(3)
    y_true, y_pred = ctx.inputs

    def batch():
        return (rng.permutation(np.asarray(y_true)), rng.permutation(np.asarray(y_pred)))

    fn(*batch())
    with _private.count_traces() as traces:
        for _ in range(NEW_BATCHES):
            fn(*batch())
    if traces[0]:
        raise Failure(f"{NEW_BATCHES} new batches of the same shape traced {traces[0]} new graph(s)")
    return f"0 traces on {NEW_BATCHES} new batches"


@check("eager_function_xla", kinds=("loss", "metric"), needs=("call",),
       why="the value is the same eagerly, in a tf.function and compiled by XLA",
       fix="replace the op XLA cannot compile, or give the same math in graphs")
def eager_function_xla(ctx):
    import tensorflow as tf

    y_true, y_pred = ctx.inputs
    for how, jit in (("tf.function", False), ("XLA", True)):
        obj = ctx.make()
        if ctx.kind == "loss":
            fn = tf.function(lambda a, b, obj=obj: obj(a, b), jit_compile=jit)
            got = fn(y_true, y_pred)
        else:
            tf.function(lambda a, b, obj=obj: obj.update_state(a, b), jit_compile=jit)(y_true, y_pred)
            got = obj.result()
        assert_outputs_equal(got, ctx.cache["value"], f"{how} against eager", COMPILED_RTOL)
    return f"within {COMPILED_RTOL:g}"


@check("finite_differences", kinds=("loss",), needs=("call",),
       why="in float64 the tape's gradient with respect to y_pred matches central differences",
       fix="check each `tf.custom_gradient` and `tf.stop_gradient` in the loss")
def finite_differences(ctx):
    import tensorflow as tf

    from spec_impl.contract.component import takes_dtype

    obj = ctx.make(dtype="float64") if takes_dtype(ctx.make) else ctx.make()
    y_true, y_pred = (np.asarray(a, "float64") for a in ctx.inputs)
    var = tf.Variable(y_pred)
    with tf.GradientTape() as tape:
        value = obj(y_true, var)
    if value.dtype != tf.float64:
        raise Skip(f"the loss computes in {value.dtype.name} on float64 inputs (its factory takes no "
                   f"dtype, or ignores it)")
    grad = tape.gradient(value, var)
    grad = np.zeros(y_pred.shape) if grad is None else np.asarray(grad)
    rng = np.random.default_rng(11)
    for _ in range(FD_PROBES):
        index = np.unravel_index(int(rng.integers(y_pred.size)), y_pred.shape)
        matched, estimates = _matches_at_some_step(grad[index], lambda v: obj(y_true, v),
                                                   lambda: var, var, index)
        if not matched:
            raise _fd_failure("loss / d y_pred", index, grad[index], estimates)
    return f"{FD_PROBES} coordinates"
