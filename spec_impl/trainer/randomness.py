"""Random ops whose state no checkpoint holds.

A stateful random op of TensorFlow (`tf.random.normal`, `tf.random.uniform`, ... with or
without a seed) keeps the position of its stream in its kernel, not in a variable: a checkpoint
cannot hold it, and a resumed run starts the stream again, redrawing the noise the first steps
drew. Keras's `keras.random` with a `SeedGenerator` (its state is a variable the model tracks)
and a `tf.random.Generator` the model holds resume where they stopped.
"""

import random
import warnings

import numpy as np
import tensorflow as tf

# TensorFlow's stateful random kernels (the stateless and Generator-based ones keep no state).
STATEFUL_RANDOM_OPS = frozenset({
    "RandomStandardNormal", "RandomUniform", "RandomUniformInt", "TruncatedNormal",
    "ParameterizedTruncatedNormal", "RandomShuffle", "Multinomial", "RandomGamma",
    "RandomPoisson", "RandomPoissonV2"})
FIX = ("draw with keras.random and a keras.random.SeedGenerator the model tracks, or with a "
       "tf.random.Generator it holds: their state is a variable, checkpointed with the rest")


class keep_random_state:
    """`with keep_random_state():` the global NumPy and Python random states are put back at
    the end: a trace of a user's step made inside it (to read its ops, or to create its
    variables) leaves no mark on draws made when a step is traced (`np.random` seeds, as
    `keras.backend.random_normal` draws them)."""

    def __enter__(self):
        self._numpy, self._python = np.random.get_state(), random.getstate()
        return self

    def __exit__(self, *exc):
        np.random.set_state(self._numpy)
        random.setstate(self._python)


def stateful_random_ops(graph):
    """`[(op type, op name), ...]` of the stateful random ops in `graph` and the functions it
    calls (loops, conditionals, nested `tf.function`s)."""
    definition = graph.as_graph_def()
    nodes = [*definition.node, *(n for f in definition.library.function for n in f.node_def)]
    return sorted({(node.op, node.name) for node in nodes if node.op in STATEFUL_RANDOM_OPS})


def train_step_graph(trainer):
    """The graph of the trainer's train step as it runs (its trace in `"function"` and `"xla"`
    modes; in `"eager"` mode a trace made for this, which leaves the random state as it was),
    or `None` where it cannot be traced."""
    traced = trainer.compiled_train_step.traced
    if isinstance(traced, tf.types.experimental.PolymorphicFunction):
        functions = traced._list_all_concrete_functions()  # the traces the loop runs
        if functions:
            return functions[0].graph
    if trainer.data_spec is None:
        return None
    specs = tf.nest.map_structure(lambda s: tf.TensorSpec(s.shape, s.dtype), trainer.data_spec)
    with keep_random_state():
        try:
            return tf.function(trainer.steps.one_train_step).get_concrete_function(specs).graph
        except (TypeError, ValueError, tf.errors.OpError):
            return None


def warn_stateful_random_ops(trainer):
    """Warn that a resume will redraw the noise of the trainer's train step when it holds
    stateful random ops, naming them and the fix; returns the ops found."""
    graph = train_step_graph(trainer)
    found = [] if graph is None else stateful_random_ops(graph)
    if found:
        ops = ", ".join(f"{kind} ({name})" for kind, name in found[:3])
        more = f" and {len(found) - 3} more" if len(found) > 3 else ""
        warnings.warn(
            f"{type(trainer.model).__name__}'s train step draws with stateful random ops, whose "
            f"state no checkpoint holds: {ops}{more}. A run resumed from this checkpoint "
            f"redraws the noise its first steps drew, so it is not bit-identical to an "
            f"uninterrupted one. To resume exactly, {FIX}.", RuntimeWarning, stacklevel=4)
    return found
