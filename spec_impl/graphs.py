"""`tf.function` from the inside (the chapter document 003 summarises): AutoGraph, concrete
functions and their graphs, variables and side effects, and how Keras traces custom code.

Each construct is a small function; `tests/test_graphs.py` pins what TensorFlow does with it.
"""

import keras
import tensorflow as tf

LOOP_COUNT = 10  # the chapter's `add_10`


@tf.function
def add_10_unrolled(x):
    """A Python `for` over `range`: AutoGraph leaves it to Python, so tracing unrolls it into
    `LOOP_COUNT` additions in the graph."""
    for _ in range(LOOP_COUNT):
        x += 1
    return x


@tf.function
def add_10_graph_loop(x):
    """A Python `for` over `tf.range`: AutoGraph turns it into one graph `While` loop."""
    for _ in tf.range(LOOP_COUNT):
        x += 1
    return x


@tf.function
def add_10_while(x):
    """A `while` on a tensor condition: also one graph `While` loop."""
    i = tf.constant(0)
    while i < LOOP_COUNT:
        x += 1
        i += 1
    return x


def op_types(concrete):
    """The operation types of a concrete function's graph, in graph order."""
    return [op.type for op in concrete.graph.get_operations()]


def make_counter():
    """`(counter, increment)`: a variable created once, outside, and a `tf.function` that
    captures it and adds to it (`assign_add`, a side effect the graph keeps)."""
    counter = tf.Variable(0, name="counter")

    @tf.function(input_signature=[tf.TensorSpec([], tf.int32)])
    def increment(by):
        return counter.assign_add(by)

    return counter, increment


@tf.function
def variable_per_call(x):
    """The mistake: a `tf.Variable` created on every call. TensorFlow refuses it."""
    v = tf.Variable(1.0)
    return v + x


class TraceLog:
    """Python-side effects against graph-side ones.

    `function(x)` appends to `python_calls` (Python code: runs while tracing only) and prints
    with `tf.print` to `stream` (a graph op: runs on every call).
    """

    def __init__(self, stream):
        self.python_calls = []
        self.stream = stream

        @tf.function
        def function(x):
            self.python_calls.append(x)  # a Python side effect: at trace time
            tf.print("called with", x, output_stream=self.stream)  # a graph op: every call
            return x + 1

        self.function = function


class CallCounter(keras.layers.Layer):
    """An identity layer counting how often Python runs its `call` (`calls`).

    Under `fit` a compiled step runs `call` once per trace; with `run_eagerly=True` once per step.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs
