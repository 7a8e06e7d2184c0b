"""Compiled calls of several steps, and which calls an epoch makes (its schedule).

- `step_loop`: up to k steps in one `tf.function` call over a dataset iterator, as `fit`'s
  `steps_per_execution` runs them (`Trainer.train_function` / `test_function`).
- `xla_program` / `xla_call`: the XLA group, k full batches through XLA programs of up to
  `XLA_UNROLL` unrolled steps each (`Trainer.xla_function`).
- `schedule` / `Call`: the calls that cover an epoch, one definition read by the fit loop,
  `Trainer.evaluate` and the benchmark runner alike.
"""

import dataclasses

import tensorflow as tf

# The XLA group unrolls at most this many steps in one program: its compilation grows with the
# steps unrolled (MiniInception on a 2-core CPU: about 15 s a step), its speed does not, so k =
# 32 runs four 8-step programs per call.
XLA_UNROLL = 8


@dataclasses.dataclass(frozen=True)
class Call:
    """One compiled call of an epoch: `steps` steps from step `start`, through the XLA group
    when `grouped`."""

    start: int
    steps: int
    grouped: bool = False


def next_call(start, steps, k, full=None):
    """The call an epoch makes at step `start`.

    Args:
        start: the epoch's steps done so far.
        steps: the epoch's steps, or `None` when unknown (the call then asks for k and the
            data decide).
        k: steps per call.
        full: where the epoch's steps can go through the XLA group (`Trainer.xla_function`):
            up to this step every batch is full; `None`: never grouped.
    """
    count = k if steps is None else min(k, steps - start)  # never past the epoch's end
    return Call(start, count, grouped=k > 1 and full is not None and full - start >= k)


def schedule(steps, k, full=None, start=0):
    """Every call of an epoch of `steps` known steps from step `start` (see `next_call`)."""
    while start < steps:
        call = next_call(start, steps, k, full)
        yield call
        start += call.steps


def _zeros_like_outputs(step, element_spec):
    """Zeros of the structure `step` returns for a batch of `element_spec`, to start the
    loop's logs with: read from a trace in a graph of its own that never runs (the compiled
    step inside it is the one the loop calls, traced once for both)."""
    specs = tf.nest.map_structure(  # unnamed; a distributed batch's spec as it is
        lambda s: tf.TensorSpec(s.shape, s.dtype) if isinstance(s, tf.TensorSpec) else s,
        element_spec)
    outputs = tf.function(step).get_concrete_function(specs).structured_outputs
    return tf.nest.map_structure(
        lambda t: tf.zeros([0 if d is None else d for d in t.shape], t.dtype), outputs)


def step_loop(step, after, mode):
    """`run(iterator, steps)`: up to `steps` (an int32 tensor) steps in one call, each followed
    by `after(loss, read_logs)`; returns how many ran and the last step's logs.

    The step is called at one place, inside the loop, as `fit`'s loop calls it: a stateful
    random op in it (`tf.random.normal` in a model's own step) is one op whose state moves on
    at every step. Two call sites would be two copies of it, each drawing the same stream from
    the same seed: the second step of every call would redraw the first's noise.

    A step with `zero_logs()` (the package's own, whose logs are the model's metrics) gives the
    loop's first logs without that trace.

    The first batch is read unconditionally: on an exhausted iterator the call raises
    `tf.errors.OutOfRangeError` having run nothing, as `fit`'s does.
    """

    def run_eagerly(iterator, steps):
        done, logs = 0, None
        while done < int(steps):
            optional = iterator.get_next_as_optional() if done else None
            if optional is not None and not optional.has_value():
                break
            loss, logs = step(iterator.get_next() if optional is None else optional.get_value())
            after(loss, lambda: logs)  # noqa: B023
            done += 1
        return tf.constant(done, tf.int32), logs

    def run(iterator, steps):
        logs = (step.zero_logs() if hasattr(step, "zero_logs")
                else _zeros_like_outputs(step, iterator.element_spec)[1])
        optional = tf.experimental.Optional.from_value(iterator.get_next())
        done = tf.constant(0, tf.int32)
        for _ in tf.range(steps):
            if done > 0:
                optional = iterator.get_next_as_optional()
            if not optional.has_value():
                break
            loss, logs = step(optional.get_value())
            after(loss, lambda: logs)  # noqa: B023
            done += 1
        return done, logs

    return run_eagerly if mode == "eager" else tf.function(run)


def xla_program(one_step, per_step_logs):
    """An XLA-compiled function of n train steps over `stacked` batches (each leaf `(n, batch,
    ...)`, n <= `XLA_UNROLL`), all in one XLA program.

    It returns the n losses, the n logs when `per_step_logs` (tensors of shape `(n,)`, for
    TensorBoard), and the last step's logs: an iterator cannot be read inside an XLA program,
    so the batches come stacked, and the summaries and finiteness checks, which XLA cannot run,
    follow outside. The steps are unrolled, not a loop: XLA on a CPU runs convolutions inside a
    while loop 20-50x slower than the same step alone (`docs/benchmarks.md`), unrolled as fast,
    and a dense model no slower.
    """

    def program(stacked):
        losses, per_step = [], []
        for i in range(tf.nest.flatten(stacked)[0].shape[0]):
            loss, logs = one_step(tf.nest.map_structure(lambda t: t[i], stacked))  # noqa: B023
            losses.append(tf.cast(loss, tf.float32))
            if per_step_logs:
                per_step.append({n: tf.cast(v, tf.float32) for n, v in logs.items()})
        names = list(per_step[0]) if per_step else []
        return tf.stack(losses), {n: tf.stack([p[n] for p in per_step]) for n in names}, logs

    return tf.function(program, jit_compile=True)


def xla_call(program, k, after_group):
    """`run(iterator)`, compiled: read k batches in the graph and run them through the XLA
    `program`, `XLA_UNROLL` steps per program (a larger k runs several: the compilation grows
    with the steps unrolled, the speed does not); then `after_group(losses, logs)`, the checks
    and summaries of the k steps. Returns k and the last step's logs."""

    def run(iterator):
        batches = [iterator.get_next() for _ in range(k)]
        parts = []
        for start in range(0, k, XLA_UNROLL):
            chunk = batches[start:start + XLA_UNROLL]
            parts.append(program(tf.nest.map_structure(lambda *leaves: tf.stack(leaves), *chunk)))
        losses = tf.concat([p[0] for p in parts], axis=0)
        logs = {n: tf.concat([p[1][n] for p in parts], axis=0) for n in parts[0][1]}
        after_group(losses, logs)
        return tf.constant(k), parts[-1][2]

    return tf.function(run)
