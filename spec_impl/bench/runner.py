"""The one timing method of `spec-impl bench` and `pytest benchmarks`.

Runners are callables that each run a fixed number of training steps and wait for the last one
(`float(loss)`). `interleaved` warms every runner up outside the timed region (tracing, XLA
compilation), then times them in alternation, round by round, so that a machine whose speed
drifts during the run biases none; comparisons are the paired rounds' median ratios with a
sign-test interval (`spec_impl.bench.stats`). FLOPs per step are counted on the traced step
(`spec_impl.bench.flops`); the machine's peak is the theoretical one of its cores, clock and
vector units, beside the best matmul the run measures (`spec_impl.bench.peak`).
"""

import contextlib
import os
import statistics
import threading
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from spec_impl.bench.flops import step_flops  # noqa: F401 (the bench's API)
from spec_impl.bench.peak import best_matmul, theoretical_peak
from spec_impl.bench.provenance import provenance
from spec_impl.bench.settings import (
    BF16_FLAGS,
    DISTRIBUTED_BATCH,
    EVAL_BATCH,
    EVAL_SAMPLES,
    MIN_ROUNDS,
)
from spec_impl.bench.workloads import build_workload
from spec_impl.trainer import Trainer, dataset_steps, schedule


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(runners, rounds, warmup=1, budget=None, min_rounds=MIN_ROUNDS, first_calls=None,
                memory=None):
    """`{name: [seconds of round 1, ...]}`: each runner of `runners` (`{name: callable}`) called
    `warmup` times untimed, then once per round, the runners in turn within each round.

    Args:
        rounds: the most rounds.
        budget: seconds of timed rounds: no round starts once they are spent and `min_rounds`
            have run (`None`: `rounds` rounds).
        first_calls: a dict that receives each runner's first warm-up call in seconds
            (tracing, XLA compilation and one round's steps).
        memory: a dict that receives each runner's peak memory in bytes, measured over one
            more untimed call after the warm-up (`PeakMemory`), so that sampling never
            disturbs a timed round.
    """
    for i in range(warmup):
        for name, run in runners.items():
            seconds = timed(run)
            if i == 0 and first_calls is not None:
                first_calls[name] = seconds
    if memory is not None:
        for name, run in runners.items():
            with PeakMemory() as peak:
                run()
            memory[name] = peak.result
    times = {name: [] for name in runners}
    start = time.perf_counter()
    for i in range(rounds):
        for name, run in runners.items():
            times[name].append(timed(run))
        if budget is not None and i + 1 >= min_rounds and time.perf_counter() - start >= budget:
            break
    return times


class PeakMemory:
    """`with PeakMemory() as peak: ...` then `peak.result`: `{"host_bytes": the process's peak
    resident memory during the block (sampled every millisecond from /proc/self/statm; `None`
    where it cannot be read), "device_bytes": the first GPU's peak (`None` without one)}`."""

    INTERVAL_S = 0.001

    def __init__(self):
        self._stop = threading.Event()
        self._peak = None
        self._gpu = bool(tf.config.list_logical_devices("GPU"))
        self.result = None

    @staticmethod
    def _rss():
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def _sample(self):
        while not self._stop.is_set():
            rss = self._rss()
            if rss is not None:
                self._peak = max(self._peak or 0, rss)
            self._stop.wait(self.INTERVAL_S)

    def __enter__(self):
        if self._gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        last = self._rss()
        host = None if self._peak is None else max(self._peak, last or 0)
        device = tf.config.experimental.get_memory_info("GPU:0")["peak"] if self._gpu else None
        self.result = {"host_bytes": host, "device_bytes": device}


def median_seconds(fn, rounds, warmup=1):
    """Median wall time of `fn()` over `rounds` calls, after `warmup` untimed calls."""
    return statistics.median(interleaved({"fn": fn}, rounds, warmup)["fn"])


def make_trainer(workload, mode, steps_per_execution=1, strategy=None):
    """A `Trainer` in `mode` with a fresh Adam optimizer, built and ready to step (under
    `strategy`, whose scope must hold the workload's model)."""
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        optimizer = keras.optimizers.Adam(1e-4)
    with warnings.catch_warnings():  # XLA's cost on a CPU is what the benchmark measures
        warnings.filterwarnings("ignore", message="mode='xla' on a CPU")
        trainer = Trainer(workload.model, loss=workload.loss, optimizer=optimizer, mode=mode,
                          steps_per_execution=steps_per_execution, strategy=strategy)
    return trainer.build(workload.element_spec())


def distributed_trainer(name, replicas=None):
    """`(workload, trainer)` of `name` at the global batch `DISTRIBUTED_BATCH`, in function mode,
    under `MirroredStrategy` on `replicas` devices (`None`: no strategy)."""
    from spec_impl.trainer import make_strategy

    strategy = None if replicas is None else make_strategy("mirrored", replicas)
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        workload = build_workload(name, DISTRIBUTED_BATCH)
    return workload, make_trainer(workload, "function", strategy=strategy)


def same_batch_runner(trainer, workload, steps):
    """A callable running the train step alone `steps` times on the workload's one batch."""
    def run():
        for _ in range(steps):
            float(trainer.compiled_train_step((workload.x, workload.y))[0])  # float(): wait for the step

    return run


def loop_runner(trainer, dataset, k=None):
    """A callable running the custom loop over `dataset` as `train` does: the epoch's calls
    (`spec_impl.trainer.schedule`; in `xla` mode with k > 1, the XLA group for every k full
    batches), completion forced once at the end. With `k`, the trainer is switched to it
    (`Trainer.configure`) before each run, so that the loops of one mode share one trainer and
    its traces."""
    steps = dataset_steps(dataset)
    mode, k = trainer.mode, k or trainer.steps_per_execution

    def run():
        trainer.configure(mode, k)
        iterator = trainer.iterator(dataset)  # distributed under a strategy
        for call in schedule(steps, k, full=steps):  # every batch here is full
            trainer.train_call(iterator, call)
        float(trainer.checks.last_loss.numpy())  # wait for the last step

    return run


def fit_runner(workload, dataset, steps_per_execution=1, jit_compile=False):
    """A callable running one `model.fit` epoch over `dataset` (the model compiled here: give
    each fit runner a workload of its own)."""
    model = workload.model
    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=workload.loss,
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    return lambda: model.fit(dataset, epochs=1, verbose=0, shuffle=False)


def rates(seconds, batch_size, flops, peak):
    """The figures of one step that took `seconds`: ms/step, samples/s, and, where the step's
    FLOPs are known, GFLOP/s, its share of the theoretical peak (`pct_of_peak`) and of the best
    matmul measured (`pct_of_matmul`); `peak` is one compute dtype's `{"theoretical": GFLOP/s,
    "matmul": GFLOP/s}` (`peaks`), either `None` where unknown."""
    gflops = flops / seconds / 1e9 if flops else None
    peak = peak or {}

    def share(of):
        return None if gflops is None or not peak.get(of) else 100 * gflops / peak[of]

    return {"ms_per_step": 1e3 * seconds, "samples_per_s": batch_size / seconds,
            "gflops": gflops, "pct_of_peak": share("theoretical"), "pct_of_matmul": share("matmul")}


def tracing_count(trainer):
    """Traces of the train step so far (0 in eager mode)."""
    fn = trainer.compiled_train_step.traced
    return fn.experimental_get_tracing_count() if hasattr(fn, "experimental_get_tracing_count") else 0


def peaks(device="cpu"):
    """This run's peaks: `(per_dtype, theoretical, matmul)`, where `per_dtype` is `{compute
    dtype: {"theoretical": GFLOP/s or None, "matmul": GFLOP/s}}` (float32 and bfloat16, and
    float16 on a GPU) for `rates`, `theoretical` the `machine["peak"]` record
    (`spec_impl.bench.peak.theoretical_peak`) and `matmul` the best matmuls measured
    (`spec_impl.bench.peak.best_matmul`)."""
    dtypes = ("float32", "bfloat16", "float16") if device == "gpu" else ("float32", "bfloat16")
    theoretical = theoretical_peak(device)
    matmul = best_matmul(dtypes)
    per_dtype = {d: {"theoretical": theoretical["gflops"].get(d), "matmul": matmul[d]["gflops"]}
                 for d in dtypes}
    return per_dtype, theoretical, matmul


def eval_data(seed=0):
    """Document 002's evaluation set: `EVAL_SAMPLES` MNIST-sized samples as arrays `x`, `y` and
    as a dataset batched by `EVAL_BATCH`."""
    rng = np.random.default_rng(seed)
    x = rng.random((EVAL_SAMPLES, 784)).astype("float32")
    y = rng.integers(0, 10, EVAL_SAMPLES)
    return x, y, tf.data.Dataset.from_tensor_slices((x, y)).batch(EVAL_BATCH)


def has_bf16_instructions(machine):
    """Whether `machine_info()` names a CPU flag of bfloat16 instructions (`BF16_FLAGS`)."""
    return any(machine.get(flag) for flag in BF16_FLAGS)


def machine_info(device="cpu"):
    """The machine, software, command and environment of this run
    (`spec_impl.bench.provenance`)."""
    return provenance(device)
