"""The contract's checks of a loss or a metric.

A loss is called on `(y_true, y_pred)`; a metric is updated with its inputs as its
`update_state` takes them (`(y_true, y_pred)`, or `(values,)` for `Mean` and `Sum`). Generated
targets are valid for the kind the component declares (`spec_impl.contract.facts.TARGETS`).
"""

import json
import os

import numpy as np

from spec_impl.contract.core import Failure, Skip, check
from spec_impl.contract.gradients import Coordinates, compare_gradients
from spec_impl.contract.numeric_checks import COMPILED_RTOL
from spec_impl.contract.saving_checks import assert_outputs_equal, missing_arguments, run_child

NEW_BATCHES = 3


def _evaluate(ctx, obj, inputs=None):
    """A loss's value, or a fresh metric's result after one update."""
    inputs = ctx.inputs if inputs is None else inputs
    if ctx.kind == "loss":
        return obj(*inputs)
    obj.reset_state()
    obj.update_state(*inputs)
    return obj.result()


def value(ctx):
    """The component's value on the inputs, computed once."""
    if "value" not in ctx.cache:
        ctx.cache["value"] = np.asarray(_evaluate(ctx, ctx.obj))
    return ctx.cache["value"]


@check("call", kinds=("loss", "metric"), needs=("construct",),
       why="on (y_true, y_pred) a loss gives a finite float32 scalar; a metric's result after "
           "one update is finite",
       fix="reduce the loss to a scalar (Keras's `Loss.__call__` does so for a `call` returning "
           "per-example values)")
def call(ctx):
    import keras

    result = _evaluate(ctx, ctx.obj)
    array = np.asarray(result)
    if ctx.kind == "loss" and array.shape != ():
        raise Failure(f"the loss is shaped {array.shape}, not a scalar")
    if not np.all(np.isfinite(array)):
        raise Failure(f"the value {array} is not finite")
    dtype = keras.backend.standardize_dtype(result.dtype)
    if ctx.kind == "loss" and dtype != "float32":
        raise Failure(f"the loss is {dtype} under the default policy, not float32")
    ctx.cache["value"] = array
    shown = array.tolist() if array.size < 5 else array.shape
    return f"{shown} on {ctx.facts.target} targets"


@check("state_at_construction", kinds=("metric",), needs=("construct",),
       why="a metric's state variables exist once it is constructed (Keras builds metrics "
           "before any update, and a strategy must see them in its scope)",
       fix="create the state with `self.add_variable` in `__init__`")
def state_at_construction(ctx):
    from spec_impl.contract.core import first_line

    obj = ctx.make()
    try:
        obj.result()
        early = ""
    except Exception as error:
        early = f"; `result()` before the first update raises {first_line(error)[:120]}"
    if not obj.variables:
        raise Failure(f"{type(obj).__name__} has no variables after construction{early}")
    count = len(obj.variables)
    obj.update_state(*ctx.inputs)
    if len(obj.variables) != count:
        raise Failure(f"`update_state` created variables ({count} -> {len(obj.variables)}){early}")
    if early:
        raise Failure(early[2:].capitalize())
    return f"{count} variables"


@check("streaming", kinds=("metric",), needs=("call", "state_at_construction"),
       why="updating on two halves of a batch gives the result of one update on the whole, and "
           "`reset_state` returns to a fresh metric's result",
       fix="accumulate sums and counts in variables and divide in `result`, not in `update_state`")
def streaming(ctx):
    half = len(ctx.inputs[0]) // 2
    obj = ctx.make()
    fresh = np.asarray(obj.result())
    obj.update_state(*(np.asarray(a)[:half] for a in ctx.inputs))
    obj.update_state(*(np.asarray(a)[half:] for a in ctx.inputs))
    assert_outputs_equal(obj.result(), value(ctx), "two half-batch updates against one",
                         COMPILED_RTOL)
    obj.reset_state()
    assert_outputs_equal(obj.result(), fresh, "the result after `reset_state` against a fresh metric")
    return "halves = whole; reset = fresh"


@check("config_round_trip", kinds=("loss", "metric"), needs=("call",),
       why="`from_config(get_config())` rebuilds an object that gives the same values",
       fix="return every `__init__` argument from `get_config`")
def config_round_trip(ctx):
    from spec_impl.contract.saving_checks import copy_config

    obj = ctx.obj
    if not hasattr(obj, "get_config"):
        raise Skip("a plain function has no config")
    config = obj.get_config()
    try:
        clone = type(obj).from_config(copy_config(config))
    except TypeError as error:
        clone, failed = None, error
    if clone is None or clone.get_config() != config or not np.array_equal(
            np.asarray(_evaluate(ctx, clone)), value(ctx), equal_nan=True):
        missing = missing_arguments(obj, config)
        names = ", ".join(f"`{m}`" for m in missing)
        if missing:
            raise Failure(f"`get_config` does not return {names}: `from_config` builds a different "
                          f"{type(obj).__name__}", f"add {names} to `get_config`")
        raise Failure(f"`from_config(get_config())` builds a different {type(obj).__name__}"
                      + (f" ({failed})" if clone is None else ""))
    return f"{len(config)} config entries"


def _json_file(ctx):
    """The component serialized as a `.keras` file stores it, written once."""
    import keras

    if "json_file" not in ctx.cache:
        path = os.path.join(ctx.folder, "component.json")
        with open(path, "w") as f:
            f.write(json.dumps(keras.saving.serialize_keras_object(ctx.obj)))
        ctx.cache["json_file"] = path
    return ctx.cache["json_file"]


@check("keras_reload", kinds=("loss", "metric"), needs=("config_round_trip",),
       why="the object serializes as a `.keras` file stores a compiled loss or metric, and "
           "deserializes without `custom_objects` to one that gives the same values",
       fix="register it with `@keras.saving.register_keras_serializable(package=...)`")
def keras_reload(ctx):
    import keras

    with open(_json_file(ctx)) as f:
        text = f.read()
    try:
        clone = keras.saving.deserialize_keras_object(json.loads(text))
    except Exception as error:
        raise Failure(f"it deserializes only with `custom_objects`: {str(error)[:200]}") from error
    assert_outputs_equal(_evaluate(ctx, clone), value(ctx), "the reloaded object")
    return "serialized and deserialized"


@check("fresh_process_reload", kinds=("loss", "metric"), needs=("keras_reload",),
       why="it deserializes in a new Python process that imports only its module",
       fix="register it when its module is imported (decorate it at module level)")
def fresh_process_reload(ctx):
    run_child(ctx, ctx.kind, _json_file(ctx), value(ctx), "the object deserialized in a fresh process")
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

    def batch():
        order = rng.permutation(len(ctx.inputs[0]))
        return [np.asarray(a)[order] for a in ctx.inputs]

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

    for how, jit in (("tf.function", False), ("XLA", True)):
        obj = ctx.make()
        if ctx.kind == "loss":
            got = tf.function(lambda *a, obj=obj: obj(*a), jit_compile=jit)(*ctx.inputs)
        else:
            tf.function(lambda *a, obj=obj: obj.update_state(*a), jit_compile=jit)(*ctx.inputs)
            got = obj.result()
        assert_outputs_equal(got, value(ctx), f"{how} against eager", COMPILED_RTOL)
    return f"within {COMPILED_RTOL:g}"


@check("finite_differences", kinds=("loss",), needs=("call",),
       why="in float64 the tape's gradient with respect to y_pred matches central differences "
           "(on targets valid for the loss: rows of a distribution for a categorical loss, whose "
           "gradient TensorFlow defines for those alone)",
       fix="check each `tf.custom_gradient` and `tf.stop_gradient` in the loss")
def finite_differences(ctx):
    import tensorflow as tf

    obj, _ = ctx.make_under("float64")
    y_true, y_pred = (np.asarray(a, "float64") if np.asarray(a).dtype.kind == "f" else np.asarray(a)
                      for a in ctx.inputs)
    result = obj(y_true, tf.constant(y_pred))
    if result.dtype != tf.float64:
        raise Skip(f"the loss computes in {result.dtype.name} on float64 inputs (its factory takes no "
                   f"dtype, or ignores it)")
    return compare_gradients(Coordinates(y_pred, []), lambda t: obj(y_true, t), "loss").replace(
        "coordinates", "coordinates of y_pred", 1)
