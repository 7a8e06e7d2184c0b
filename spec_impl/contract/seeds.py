"""Random draws made comparable: the same seed-generator states for two objects, or two calls.

A layer that draws with `keras.random` and a `SeedGenerator` (dropout in training, the guides'
VAE `Sampling` at every call) gives new values at each call. Its values are compared across
eager, `tf.function`, XLA, a rebuilt copy and a reloaded file with every generator set to the
same state before each call, so that each call draws the same numbers; a component that still
gives other values on a second call with its generators reset draws from stateful ops that no
state can reset (`tf.random.normal`), and its values are compared by shape alone
(`calls_differ`).
"""

import contextlib

import numpy as np

from spec_impl.contract import _private


def _generators(obj):
    return [g.state for g in _private.seed_generators(obj)]


@contextlib.contextmanager
def same_draws(*objs):
    """A context whose `draw(obj)` sets `obj`'s generators (and `keras.random`'s global one) to
    the states the first of `objs` had when the block began. Yields `draw`; the states are left
    as the last call leaves them."""
    states = [v.numpy() for v in _generators(objs[0])] if objs else []
    global_state = _private.global_seed_generator().state.numpy()

    def draw(obj):
        variables = _generators(obj)
        if len(variables) == len(states):
            for variable, state in zip(variables, states, strict=True):
                variable.assign(state)
        _private.global_seed_generator().state.assign(global_state)
        return obj

    for obj in objs:
        draw(obj)
    yield draw


def calls_differ(call, obj, reset):
    """Whether two calls `call(obj)` in a row give other values: with `reset`, each from the
    same generator states (then the component draws from stateful random ops, which no state
    resets); without, as they come (then it draws random numbers at every call)."""
    import tensorflow as tf

    with same_draws(obj) as draw:
        prepare = draw if reset else (lambda o: o)
        first = [np.asarray(t) for t in tf.nest.flatten(call(prepare(obj)))]
        second = [np.asarray(t) for t in tf.nest.flatten(call(prepare(obj)))]
    return not all_equal(first, second)


def all_equal(first, second):
    """Whether two lists of arrays are equal item by item (NaN equal to NaN in float arrays)."""
    return all(a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
               for a, b in zip(first, second, strict=True))
