"""What Keras declares about a component, read once and shared by every check.

The checks assume nothing a component does not declare: how its `call` takes several inputs
(its signature), whether it passes masks on (`supports_masking`, and whether its output keeps
the axes a mask covers), whether XLA may compile it (`supports_jit`, on it and every layer
inside), whether it overrides `build`, whether it draws random numbers (its seed generators),
whether it wraps another layer, whether it is a Functional or Sequential graph of layers, and
what a loss or metric expects as targets. `Facts` is computed
once per component (`Context.facts`); a new kind of component means one new fact here, not
edits across the checks.
"""

import dataclasses
import inspect

from spec_impl.contract import _private

NOT_DATA = ("training", "mask")  # call arguments Keras fills itself, never an input
GRAPH_MODELS = ("Functional", "Sequential")

# What a loss or metric is given as `(y_true, y_pred)`, by the kind of target it expects.
TARGETS = {
    "probability": "y_true in [0, 1], y_pred in (0, 1) (the default)",
    "binary": "y_true in {0, 1}, y_pred in (0, 1)",
    "categorical": "y_true one-hot rows, y_pred rows that sum to 1 (the last axis is the classes)",
    "sparse": "y_true integer class ids (one per row), y_pred rows that sum to 1",
    "classes": "y_true and y_pred integer class ids in [0, the last axis' size)",
    "regression": "y_true and y_pred from N(0, 1)",
    "values": "one array of values from N(0, 1) (`update_state(values)`, as `Mean`)",
    "sequence": "for a shape (time, classes): y_true label ids in [1, classes) of half the time "
                "steps, y_pred rows that sum to 1 at each time step (CTC)",
}
# Words of a loss's or metric's name (its class, or the function it wraps) that declare the
# targets it expects, in the order they are tried.
TARGET_WORDS = (("sparse", "sparse"), ("categorical", "categorical"), ("binary", "binary"),
                ("hinge", "binary"))


class InputsError(ValueError):
    """The inputs given cannot be passed to the component's `call`: the caller's mistake, not
    the component's."""


def _data_parameters(fn):
    """`(positional data arguments, required ones, every argument name)` of a `call`."""
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return [], [], set()
    # A data argument has no default or `None`; a flag (`return_attention_scores=False`) is not.
    positional = [p for p in params.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in NOT_DATA
                  and (p.default is p.empty or p.default is None)]
    required = [p.name for p in positional if p.default is p.empty]
    return [p.name for p in positional], required, set(params)


def call_style(obj, inputs):
    """How `inputs` are passed to `obj`: `"one"` (as one argument, a list or dict included),
    `"positional"` (a list, one item per positional argument of `call`) or `"keywords"` (a dict
    of `call`'s argument names).

    Raises:
        InputsError: the number of inputs does not fit `call`'s arguments.
    """
    import keras

    if isinstance(obj, keras.Model):
        return "one"
    positional, required, names = _data_parameters(obj.call)
    where = f"{type(obj).__name__}.call({', '.join(positional)})"
    if isinstance(inputs, dict):
        if set(inputs) <= names and set(required) <= set(inputs):
            return "keywords"
        return "one"
    if not isinstance(inputs, (list, tuple)):
        if len(required) > 1:
            raise InputsError(f"{where} needs {len(required)} inputs ({', '.join(required)}); "
                              f"received one: give one input shape for each")
        return "one"
    if len(positional) <= 1:
        return "one"  # one argument that takes a list (a merge layer, `Attention`)
    if len(required) <= len(inputs) <= len(positional):
        return "positional"
    raise InputsError(f"{where} takes {len(required)} to {len(positional)} inputs; "
                      f"received {len(inputs)}")


def _overrides(obj, method):
    import keras

    base = keras.Model if isinstance(obj, keras.Model) else keras.layers.Layer
    return getattr(type(obj), method, None) is not getattr(base, method, None)


def target_kind(obj):
    """The targets a loss or metric expects, as its name declares them (see `TARGETS`)."""
    update = getattr(obj, "update_state", None)
    if update is not None:
        positional, _, _ = _data_parameters(update)
        if "y_pred" not in positional:
            return "values"
    fn = getattr(obj, "fn", None) or getattr(obj, "_fn", None)
    names = [getattr(fn, "__name__", ""), type(obj).__name__, getattr(obj, "name", "") or ""]
    if inspect.isfunction(obj):
        names = [obj.__name__]
    text = " ".join(names).lower()
    for word, kind in TARGET_WORDS:
        if word in text:
            return kind
    return "probability"


def describe(facts):
    """The facts a card shows after the component's class, in a few words."""
    words = {"one": "inputs as one argument", "positional": "inputs as positional arguments",
             "keywords": "inputs as keyword arguments"}
    found = [words[facts.call_style]] if facts.target is None else [f"{facts.target} targets"]
    if facts.supports_masking:
        found.append("supports masking")
    if facts.no_jit:
        found.append(f"no XLA ({', '.join(facts.no_jit)})")
    if facts.seed_generators:
        found.append(f"{facts.seed_generators} seed generator(s)")
    if facts.wrapper:
        found.append("wraps a layer")
    if facts.graph_model:
        found.append("a graph of layers")
    return "; ".join(found)


@dataclasses.dataclass(frozen=True)
class Facts:
    """What a component declares (see the module's docstring).

    Attributes:
        class_name: its class's name.
        call_style: how its inputs are passed (`call_style`).
        supports_masking: Keras's attribute.
        no_jit: the classes of the layers inside (itself included) that declare
            `supports_jit = False`: XLA is left out for them, as `fit` leaves it out.
        overrides_build: whether its class defines its own `build`.
        seed_generators: how many `keras.random.SeedGenerator`s it and its layers hold.
        wrapper: whether it wraps another layer (`keras.layers.Wrapper`).
        graph_model: whether it is a Functional or Sequential model (whose dtype is its
            layers', and whose `keras.Input`s default to `floatx`).
        target: for a loss or metric, the kind of targets it expects (`TARGETS`).
    """

    class_name: str
    call_style: str = "one"
    supports_masking: bool = False
    no_jit: tuple = ()
    overrides_build: bool = False
    seed_generators: int = 0
    wrapper: bool = False
    graph_model: bool = False
    target: str = None


def layer_facts(obj, inputs):
    """The `Facts` of a layer or model `obj` called on `inputs`."""
    import keras

    layers = _private.sublayers(obj)
    return Facts(
        class_name=type(obj).__name__,
        call_style=call_style(obj, inputs),
        supports_masking=bool(getattr(obj, "supports_masking", False)),
        no_jit=tuple(sorted({type(layer).__name__ for layer in layers
                             if getattr(layer, "supports_jit", True) is False})),
        overrides_build=_overrides(obj, "build"),
        seed_generators=len(_private.seed_generators(obj)),
        wrapper=isinstance(obj, keras.layers.Wrapper),
        graph_model=type(obj).__name__ in GRAPH_MODELS,
    )


def loss_metric_facts(obj, target=None):
    """The `Facts` of a loss or metric; `target` overrides the kind its name declares."""
    if target is not None and target not in TARGETS:
        raise InputsError(f"Expected a target among {', '.join(TARGETS)}. Received: {target!r}")
    return Facts(class_name=type(obj).__name__ if not inspect.isfunction(obj) else obj.__name__,
                 target=target or target_kind(obj))
