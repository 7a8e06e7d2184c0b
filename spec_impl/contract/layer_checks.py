"""The contract's checks of a layer or model: construction, calls, state, counts, masks."""

import functools
import warnings

import numpy as np

from spec_impl.contract import _private
from spec_impl.contract.component import as_list, map_arrays
from spec_impl.contract.core import Failure, Skip, Warn, check

LAYERS = ("layer", "model")
STATE_LOCKED = "cannot add new elements of state"  # Keras's error for state made after build


def _shape_text(shapes):
    return ", ".join(str(tuple(s)) for s in shapes)


@check("construct", kinds=LAYERS + ("loss", "metric"),
       why="the factory runs without arguments and makes the kind of object asked for",
       fix="make the factory callable without arguments (give every argument a default)")
def construct(ctx):
    from spec_impl.contract.component import kind_of

    obj = ctx.obj if ctx.obj is not None else ctx.make()
    ctx.obj = obj
    found = kind_of(obj)
    if found != ctx.kind and not (ctx.kind == "layer" and found == "model"):
        raise Failure(f"the factory made a {type(obj).__name__} ({found or 'not a Keras object'}), "
                      f"not a {ctx.kind}", "return the component from the factory, or pass --kind")
    from spec_impl.contract.facts import describe

    return f"{type(obj).__name__} ({describe(ctx.facts)})"


# Attributes Keras's own `build` wrapper and `__call__` set; a `build` that changes nothing else
# does nothing.
KERAS_BUILD_ATTRIBUTES = {"built", "_build_shapes_dict", "_path", "_called"}


def _build_effect(ctx):
    """The attributes the class's own `build` sets on a fresh object at its first call, and the
    number of its weights and seed generators after that call."""
    cls = type(ctx.obj)
    original = cls.build
    changed = set()

    @functools.wraps(original)  # Keras passes shapes by the names of `build`'s arguments
    def spy(self, *args, **kwargs):
        before = dict(vars(self))
        result = original(self, *args, **kwargs)
        after = vars(self)
        changed.update(k for k in after if k not in KERAS_BUILD_ATTRIBUTES
                       and (k not in before or after[k] is not before[k]))
        return result

    cls.build = spy
    try:
        probe = ctx.make()
    finally:
        cls.build = original
    ctx.call(probe, ctx.inputs)
    return changed, len(probe.weights) + len(_private.seed_generators(probe))


def _build_checks_shapes(ctx):
    """Whether the class's own `build` refuses shapes of rank 0 (it validates its inputs)."""
    probe = ctx.make()
    nonsense = map_arrays(lambda a: (), ctx.inputs)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            type(probe).build(probe, nonsense)
    except Exception:
        return True
    return False


@check("built_at_construction", kinds=("layer",), needs=("construct",),
       why="a layer is built when constructed, or its `build` does something: Keras builds a "
           "layer that does not override `build` at construction, and one whose `build` makes "
           "no state, sets no attribute and checks nothing stays unbuilt for nothing (a warning: "
           "Keras accepts it)",
       fix="delete the `build` that does nothing (a `super().build(input_shape)` stub)")
def built_at_construction(ctx):
    obj = ctx.make()
    if obj.built:
        return "built"
    if not ctx.facts.overrides_build:
        return "built by Keras at its first call (it does not override `build`)"
    changed, state = _build_effect(ctx)
    if state:
        return f"`build` makes its state ({state} weights and seed generators)"
    if changed:
        return f"`build` sets {', '.join(sorted(changed)[:4])} (no state for these inputs)"
    if _build_checks_shapes(ctx):
        return "`build` checks its input shapes (no state for these inputs)"
    raise Warn(f"{type(obj).__name__} overrides `build`, which makes no state and sets no "
               f"attribute: the layer stays unbuilt until its first call for nothing")


def _weights_after_build(ctx):
    """The number of weights `build(input_shape)` alone makes, or `None` where the layer takes
    several inputs (whose `build` arguments differ from layer to layer)."""
    import keras

    if isinstance(ctx.inputs, (list, tuple, dict)) or isinstance(ctx.obj, keras.Model):
        return None
    probe = ctx.make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns of a composite layer without `build`
        probe.build(np.shape(ctx.inputs))
    return len(probe.weights)


@check("state_in_build", kinds=LAYERS, needs=("construct",),
       why="every weight, sub-layer and seed generator exists once the layer is built: Keras "
           "refuses state made in a call after the build, and state made at every call escapes "
           "tracking and tf.function; weights that only a first call creates (a composite layer "
           "without `build`) are a warning, as Keras warns",
       fix="create weights with `self.add_weight` in `build(input_shape)` and sub-layers in `__init__`")
def state_in_build(ctx):
    import tensorflow as tf

    obj = ctx.obj
    try:
        ctx.symbolic()
    except ValueError as error:
        if STATE_LOCKED in str(error):
            raise Failure(f"`{type(obj).__name__}.call` creates state after the layer is built "
                          f"(Keras: \"You {STATE_LOCKED}\")") from error
        raise
    weights, seeds = len(obj.weights), len(_private.seed_generators(obj))
    created = []

    def creator(next_creator, **kwargs):
        created.append(kwargs.get("name"))
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        ctx.call(obj, ctx.inputs, training=False)
        ctx.call(obj, ctx.inputs, training=False)
    after = (len(obj.weights), len(_private.seed_generators(obj)))
    if created or after != (weights, seeds):
        raise Failure(f"calls after the build created {len(created)} variable(s) {created} "
                      f"(weights {weights} -> {after[0]}, seed generators {seeds} -> {after[1]})")
    built = _weights_after_build(ctx)
    if built is not None and built < weights:
        raise Warn(f"`build(input_shape)` makes {built} of the {weights} weights; the others "
                   f"appear only at the first call, so weights loaded before a call miss them "
                   f"(Keras warns of the same)",
                   "build every sub-layer in `build` (`self.inner.build(input_shape)`)")
    return f"{weights} weights, {seeds} seed generators after the build"


@check("symbolic_call", kinds=LAYERS, needs=("state_in_build",),
       why="a call on `keras.Input` gives outputs of the expected shape with an open batch axis",
       fix="make `compute_output_shape` (or `compute_output_spec`) agree with `call`")
def symbolic_call(ctx):
    shapes = [tuple(o.shape) for o in as_list(ctx.symbolic())]
    if any(s[:1] != (None,) for s in shapes):
        raise Failure(f"symbolic output shapes {_shape_text(shapes)} do not keep the open batch axis")
    want = ctx.expect.get("output_shape")
    if want is not None:
        want = [tuple(want)] if not isinstance(want, list) else [tuple(w) for w in want]
        if shapes != [(None, *w) for w in want]:
            raise Failure(f"symbolic output shapes {_shape_text(shapes)}, expected "
                          f"{_shape_text((None, *w) for w in want)}")
    return _shape_text(shapes)


@check("eager_call", kinds=LAYERS, needs=("symbolic_call",),
       why="a call on real data gives the symbolic call's shapes with the real batch size",
       fix="make `compute_output_shape` (or `compute_output_spec`) agree with `call`")
def eager_call(ctx):
    shapes = [tuple(o.shape) for o in as_list(ctx.eager())]
    want = [(ctx.batch, *tuple(o.shape)[1:]) for o in as_list(ctx.symbolic())]
    if shapes != want:
        raise Failure(f"eager output shapes {_shape_text(shapes)} differ from the symbolic call's "
                      f"{_shape_text(want)}")
    return _shape_text(shapes)


@check("output_dtype", kinds=LAYERS, needs=("eager_call",),
       why="under the default policy float outputs have the layer's compute dtype (float32)",
       fix="compute in `self.compute_dtype` (cast with `keras.ops.cast(x, self.compute_dtype)`)")
def output_dtype(ctx):
    import keras

    want = ctx.obj.compute_dtype
    found = []
    for i, tensor in enumerate(as_list(ctx.eager())):
        got = keras.backend.standardize_dtype(tensor.dtype)
        found.append(got)
        if "float" in got and got != want:
            raise Failure(f"output {i} is {got} under the default policy; the layer's compute "
                          f"dtype is {want}")
    return ", ".join(dict.fromkeys(found))


COUNT_LABELS = {"trainable_weights": "trainable weights", "non_trainable_weights": "non-trainable weights",
                "params": "parameters", "seed_generators": "seed generators", "losses": "losses"}


@check("weight_counts", kinds=LAYERS, needs=("eager_call",),
       why="the numbers of trainable and non-trainable weights, parameters, seed generators and "
           "added losses are the expected ones (given with --expect / expect=)",
       fix="compare the layer's `build` and `add_loss` calls with what you expected")
def weight_counts(ctx):
    obj = ctx.obj
    found = {"trainable_weights": len(obj.trainable_weights),
             "non_trainable_weights": len(obj.non_trainable_weights),
             "params": obj.count_params(),
             "seed_generators": len(_private.seed_generators(obj)),
             "losses": len(obj.losses)}
    for key, want in ctx.expect.items():
        if key in found and found[key] != want:
            raise Failure(f"{found[key]} {COUNT_LABELS[key]}, expected {want}")
    return ", ".join(f"{v} {COUNT_LABELS[k]}" for k, v in found.items())


MASKED_RANK = 3  # a mask covers (batch, time) of inputs (batch, time, ...), as Keras makes them


def _mask_for(array):
    """A boolean mask over the first two axes (batch, time) of `array`, its last step masked."""
    mask = np.ones(np.shape(array)[:2], bool)
    mask[..., -1] = False
    return mask


def _masked(inputs):
    """`(inputs, first mask)`: every input a tensor carrying a mask (Keras combines the masks of
    a merge layer's inputs, and reads each argument's own)."""
    import tensorflow as tf

    def masked(array):
        tensor = tf.convert_to_tensor(array)
        _private.set_mask(tensor, tf.constant(_mask_for(array)))
        return tensor

    return map_arrays(masked, inputs), _mask_for(as_list(inputs)[0])


@check("masking", kinds=LAYERS, needs=("eager_call",),
       why="a layer that supports masking hands a mask on, shaped to fit its output, while its "
           "output keeps the axes the mask covers (a layer that consumes them, such as "
           "`GRU(4)` or a global pooling, returns none by design); a layer that makes a mask "
           "(Embedding(mask_zero=True)) attaches it",
       fix="leave `compute_mask` to Keras (it passes the mask on when `supports_masking` is "
           "True), or return a mask shaped like the output's leading axes from it")
def masking(ctx):
    obj = ctx.obj
    made = _private.get_mask(as_list(ctx.eager())[0])
    if not ctx.facts.supports_masking and made is None:
        raise Skip("the layer neither supports masking nor makes a mask")
    if made is None and np.ndim(as_list(ctx.inputs)[0]) < MASKED_RANK:
        raise Skip(f"the inputs have no time axis: Keras's masks cover (batch, time) of inputs "
                   f"of rank {MASKED_RANK} or more")
    mask = None
    inputs = ctx.inputs
    if made is None:
        inputs, mask = _masked(ctx.inputs)
    out = as_list(ctx.call(obj, inputs, training=False))[0]
    got = _private.get_mask(out)
    first = as_list(ctx.inputs)[0]
    if got is None:
        if mask is not None and (np.ndim(out) < np.ndim(first)
                                 or tuple(out.shape)[:mask.ndim] != mask.shape):
            return f"mask {mask.shape} consumed (the output {tuple(out.shape)} has no axis it covered)"
        raise Failure(f"{type(obj).__name__} claims `supports_masking` and its output "
                      f"{tuple(out.shape)} keeps the masked axes, but carries no mask: the mask "
                      f"is dropped")
    shape = tuple(got.shape)
    if tuple(out.shape)[:len(shape)] != shape:
        raise Failure(f"the output mask {shape} does not fit the output {tuple(out.shape)}")
    if mask is not None and shape == mask.shape and not np.array_equal(np.asarray(got), mask):
        raise Failure("the output mask differs from the input mask of the same shape")
    return f"mask {shape} {'made' if mask is None else 'handed on'}"
