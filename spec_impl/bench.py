"""Benchmark machinery shared by `spec-impl bench` and the pytest-benchmark suite.

Every measurement warms up outside the timed region, forces completion (`float(loss)`, which
waits for the step), and reports medians. FLOPs per step come from TensorFlow's profiler on the
traced step graph (fixed batch shape); the machine's peak is a large `tf.matmul` timed in the
same run, so "% of peak" compares like with like.
"""

import contextlib
import os
import platform
import statistics
import time
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from spec_impl._validation import MODES  # noqa: F401  (for the benchmarks)
from spec_impl.trainer.data import calls_per_epoch, untuned_options
from spec_impl.trainer.engine import Trainer

# Models of the registry (`spec_impl.registry.MODELS`) that the suite times, at these batch sizes.
WORKLOADS = ("residual_regressor", "mnist_mlp", "sequential_cnn", "mini_inception",
             "ticket_classifier")
DEFAULT_BATCH = {"residual_regressor": 32, "mnist_mlp": 32, "sequential_cnn": 128,
                 "mini_inception": 32, "ticket_classifier": 32}
PEAK_MATMUL_N = 2048
# (batches per timed round, rounds) per workload, for `spec-impl bench` and `pytest benchmarks`
# alike; --quick halves the rounds. At steps_per_execution k a round runs max(batches, k) batches.
PLAN = {"residual_regressor": (20, 5), "mnist_mlp": (20, 5), "sequential_cnn": (10, 5),
        "mini_inception": (3, 3), "ticket_classifier": (10, 5)}
EVAL_SAMPLES, EVAL_BATCH = 10_000, 32  # document 002's evaluation loop
SCALING = {"mnist_mlp": (1, 8, 32, 128, 256), "mini_inception": (1, 8, 32, 64)}  # batch sizes
QUICK_SCALING = {"mnist_mlp": (1, 32, 256), "mini_inception": (1, 32)}  # --quick
GPU_MIXED_BATCH = 256  # document 000 trained MiniInception in mixed_float16 at batch 256
STEPS_PER_EXECUTION = (1, 8, 32)  # loop and fit, each at these k
DISTRIBUTED_WORKLOADS = ("mnist_mlp", "mini_inception")  # timed under MirroredStrategy
DISTRIBUTED_BATCH = 32  # the global batch, the same for every number of replicas (divides by 4)
REPLICAS = (1, 2, 4)  # `spec-impl bench --strategy mirrored --devices N` times those <= N


def plan_steps(name, k=1):
    """Batches per timed round of `name` at steps_per_execution `k` (a multiple of k)."""
    steps = PLAN[name][0]
    return steps if k == 1 else k * -(-steps // k)
DOC_EVAL_SPEEDUP = 1.80 / 0.8  # document 002: 1.80 s eagerly, 0.8 s with tf.function


@dataclass
class Workload:
    """A model, its loss and one batch, ready to time."""

    name: str
    model: keras.Model
    loss: object
    x: object
    y: object
    batch_size: int

    def dataset(self, steps):
        """`steps` copies of the batch as a batched `tf.data.Dataset`, as `train` iterates."""
        rep = lambda t: tf.concat([t] * steps, axis=0)  # noqa: E731  (a one-line helper)
        return tf.data.Dataset.from_tensor_slices(
            (tf.nest.map_structure(rep, self.x), tf.nest.map_structure(rep, self.y))
        ).batch(self.batch_size).with_options(untuned_options())  # see trainer.data.untuned_options

    def element_spec(self):
        return self.dataset(1).element_spec


def build_workload(name, batch_size=None, seed=0):
    """A fresh `Workload`: the registry's model built, its training loss, one batch of generated
    inputs (uniform in [0, 1)) and targets of the loss's kind (class ids, one-hot or normal)."""
    from spec_impl.registry import get_model_spec

    if name not in WORKLOADS:
        raise ValueError(f"Unknown workload {name!r}. Expected one of {', '.join(WORKLOADS)}.")
    spec = get_model_spec(name)
    b = batch_size or DEFAULT_BATCH[name]
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    model = spec.build(spec.input_shape, spec.num_classes)
    inputs = getattr(model, "inputs", None) or []  # a subclassed model has none
    if len(inputs) > 1:  # several named inputs: a dict, as `fit` takes them
        x = {i.name: rng.random((b, *i.shape[1:])) for i in inputs}
    else:
        x = rng.random((b, *spec.input_shape))
    x = tf.nest.map_structure(lambda a: tf.constant(a, tf.float32), x)
    loss = spec.training_loss()
    outputs = tf.nest.flatten(model(x))
    targets = tuple(_targets(rng, fn, int(out.shape[-1]), b)
                    for fn, out in zip(loss if isinstance(loss, list) else [loss], outputs))
    return Workload(name, model, loss, x, targets[0] if len(targets) == 1 else targets, b)


def _targets(rng, loss, width, batch):
    kind = loss if isinstance(loss, str) else type(loss).__name__.lower()
    if "sparse" in kind:
        return tf.constant(rng.integers(0, width, batch), tf.int64)
    if "categorical" in kind:
        return tf.one_hot(rng.integers(0, width, batch), width)
    return tf.constant(rng.normal(size=(batch, width)), tf.float32)


def eval_data(seed=0):
    """Document 002's evaluation set: `EVAL_SAMPLES` MNIST-sized samples as arrays `x`, `y` and
    as a dataset batched by `EVAL_BATCH`."""
    rng = np.random.default_rng(seed)
    x = rng.random((EVAL_SAMPLES, 784)).astype("float32")
    y = rng.integers(0, 10, EVAL_SAMPLES)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(EVAL_BATCH)


def make_trainer(workload, mode, steps_per_execution=1, strategy=None):
    """A `Trainer` in `mode` with a fresh Adam optimizer, built and ready to step (under
    `strategy`, whose scope must hold the workload's model)."""
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        optimizer = keras.optimizers.Adam(1e-4)
    trainer = Trainer(workload.model, loss=workload.loss, optimizer=optimizer, mode=mode,
                      steps_per_execution=steps_per_execution, strategy=strategy)
    return trainer.build(workload.element_spec())


def distributed_trainer(name, replicas=None):
    """`(workload, trainer)` of `name` at the global batch `DISTRIBUTED_BATCH`, in function mode,
    under `MirroredStrategy` on `replicas` devices (`None`: no strategy)."""
    from spec_impl.trainer.distribute import make_strategy

    strategy = None if replicas is None else make_strategy("mirrored", replicas)
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        workload = build_workload(name, DISTRIBUTED_BATCH)
    return workload, make_trainer(workload, "function", strategy=strategy)


def rates(seconds, batch_size, flops, peak):
    """The figures of one step that took `seconds`: ms/step, samples/s, and, where the step's
    FLOPs are known, GFLOP/s and the share of the measured matmul `peak` (GFLOP/s)."""
    gflops = flops / seconds / 1e9 if flops else None
    return {"ms_per_step": 1e3 * seconds, "samples_per_s": batch_size / seconds,
            "gflops": gflops, "pct_of_peak": None if gflops is None else 100 * gflops / peak}


def tracing_count(trainer):
    """Traces of the train step so far (0 in eager mode)."""
    fn = trainer.train_step
    return fn.experimental_get_tracing_count() if hasattr(fn, "experimental_get_tracing_count") else 0


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def median_seconds(fn, rounds, warmup=1):
    """Median wall time of `fn()` over `rounds` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn) for _ in range(rounds))


def step_flops(trainer, workload):
    """Floating-point operations of one training step, from the profiler on a fixed-shape trace."""
    from tensorflow.python.profiler.model_analyzer import profile
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder
    from tensorflow.python.util import deprecation

    specs = tf.nest.map_structure(lambda t: tf.TensorSpec(t.shape, t.dtype),
                                  (workload.x, workload.y))
    graph = tf.function(trainer._train_step).get_concrete_function(specs).graph
    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    with deprecation.silence():  # the TF1 profiler warns of its own TF1 helpers
        return int(profile(graph, options=options).total_float_ops)


def peak_gflops(n=PEAK_MATMUL_N, rounds=5):
    """GFLOP/s of an n x n float32 matmul: this machine's reference peak, measured now."""
    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    matmul = tf.function(lambda a, b: tf.reduce_sum(a @ b))
    seconds = median_seconds(lambda: float(matmul(a, b)), rounds)
    return 2 * n**3 / seconds / 1e9


def same_batch_runner(trainer, workload, steps):
    """A callable running the train step `steps` times on the workload's one fixed batch."""
    def run():
        for _ in range(steps):
            float(trainer.train_step((workload.x, workload.y)))  # float(): wait for the step

    return run


def loop_runner(trainer, dataset):
    """A callable running the custom loop over `dataset` as `train` does: one call of
    `train_function` per `steps_per_execution` batches, completion forced once at the end."""
    calls = calls_per_epoch(dataset, trainer.steps_per_execution)

    def run():
        iterator = trainer.iterator(dataset)  # distributed under a strategy
        for _ in range(calls):
            trainer.train_function(iterator)
        float(trainer.last_loss.numpy())  # wait for the last step

    return run


def fit_runner(workload, dataset, steps_per_execution=1):
    """A callable running one `model.fit` epoch over `dataset` (the model compiled here)."""
    model = workload.model
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=workload.loss,
                  steps_per_execution=steps_per_execution)
    return lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False)


def distributed_step_seconds(name, replicas, steps, rounds):
    """`{replicas: seconds per step}` of the loop over `steps` batches of `name` with no strategy
    (key `None`) and on each number of `replicas`, timed in alternation round by round."""
    runs = {}
    for n in (None, *replicas):
        workload, trainer = distributed_trainer(name, n)
        runs[n] = loop_runner(trainer, workload.dataset(steps))
        runs[n]()  # warm-up: traces the step
    times = {n: [] for n in runs}
    for _ in range(rounds):
        for n, run in runs.items():
            times[n].append(timed(run))
    return {n: statistics.median(t) / steps for n, t in times.items()}


def step_seconds(trainer, workload, steps, rounds, warmup=1):
    """Per-call time of the train step alone on one fixed batch, completion forced each call."""
    return median_seconds(same_batch_runner(trainer, workload, steps), rounds, warmup) / steps


def loop_step_seconds(trainer, workload, steps, rounds, warmup=1):
    """Per-step time of the custom loop over `steps` batches, median over rounds."""
    run = loop_runner(trainer, workload.dataset(steps))
    return median_seconds(run, rounds, warmup) / steps


def loop_and_fit_step_seconds(trainer, workload, steps, rounds, warmup=1):
    """Per-step times of the custom loop and of `model.fit` over the same `steps` batches, both
    at the trainer's `steps_per_execution`.

    The two are timed in alternation, round by round, so that a machine whose speed drifts
    during the run (shared or throttled cores) biases neither; medians over rounds.
    """
    dataset = workload.dataset(steps)
    loop = loop_runner(trainer, dataset)
    fit = fit_runner(workload, dataset, trainer.steps_per_execution)
    for _ in range(warmup):
        fit()
        loop()
    loop_times, fit_times = [], []
    for _ in range(rounds):
        loop_times.append(timed(loop))
        fit_times.append(timed(fit))
    return statistics.median(loop_times) / steps, statistics.median(fit_times) / steps


def machine_info(device="cpu"):
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "device": device}
    if device == "gpu":
        gpus = tf.config.list_physical_devices("GPU")
        info["gpu"] = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
                       for g in gpus]
        info["tf32"] = tf.config.experimental.tensor_float_32_execution_enabled()
    return info
