"""What `spec-impl bench` measures, workload by workload, and the whole run.

Each measurement builds its runners, times them interleaved (`runner.interleaved`) and returns
rows (ms/step, samples/s, GFLOP/s, % of the theoretical peak and of the best matmul of the row's
compute dtype) and ratios, each
with an interval and a verdict (`stats.compare`). The pytest-benchmark suite calls the same
functions with the same `BenchSettings`.
"""

import dataclasses
import statistics
import time

import tensorflow as tf

from spec_impl._validation import MODES
from spec_impl.bench import runner as timing
from spec_impl.bench import stats
from spec_impl.bench.provenance import SCHEMA_VERSION
from spec_impl.bench.report import peak_line
from spec_impl.bench.settings import (
    BF16_FLAGS,
    DISTRIBUTED_BATCH,
    DISTRIBUTED_WORKLOADS,
    DOC_EVAL_SPEEDUP,
    EAGER_SHARE,
    EVAL_BATCH,
    GPU_MIXED_BATCH,
    MIN_ROUNDS,
    NOISE_PCT,
    REPLICAS,
    WORKLOADS,
    BenchSettings,
    comparisons,
    quick_skips,
    runner_names,
    step_counts,
)
from spec_impl.bench.workloads import WorkloadSpec, build_workload
from spec_impl.precision import global_policy
from spec_impl.trainer import AUTO_MODES, XLA_UNROLL, Calibration


def _compute_dtype(model):
    """The dtype the model's layers compute in (`bfloat16` under `mixed_bfloat16`)."""
    return model.dtype_policy.compute_dtype


def _runners(spec, settings, log):
    """`({name: runner}, {name: steps per call of it}, first-call seconds, workload, flops)`."""
    workload = spec.build()
    name = workload.name
    runners, steps, first = {}, {}, {}
    flops = None
    # One trainer per mode: its step and every loop of that mode. All are made (each compiles
    # the model, and Keras's compile replaces the loss tracker) before any traces.
    trainers = {mode: timing.make_trainer(workload, mode) for mode in MODES}
    for mode, trainer in trainers.items():
        first[mode] = timing.timed(
            lambda t=trainer: float(t.compiled_train_step((workload.x, workload.y))[0]))
        if flops is None:
            flops = timing.step_flops(trainer, workload)
        # eager steps are 10-50x slower: a fraction of the steps times them as well
        steps[mode] = max(1, settings.steps(name) // EAGER_SHARE) if mode == "eager" \
            else settings.steps(name)
        if settings.selects(mode):
            runners[mode] = _checked(timing.same_batch_runner(trainer, workload, steps[mode]),
                                     trainer, mode)
    for runner in runner_names(name, settings.level)[len(MODES):]:
        if not settings.selects(runner):
            continue
        kind, _, k = runner.rpartition("_k")
        k = int(k)
        steps[runner] = settings.steps(name, k)
        dataset = workload.dataset(steps[runner])
        if kind in ("fit", "fit_xla"):
            own = spec.build()  # fit compiles the model: each fit runner gets its own
            runners[runner] = timing.fit_runner(own, own.dataset(steps[runner]), k, kind == "fit_xla")
        else:
            trainer = trainers["xla" if kind == "xla_loop" else "function"]
            runners[runner] = timing.loop_runner(trainer, dataset, k)
    log(f"  {len(runners)} runners, {settings.rounds(name)} rounds")
    return runners, steps, first, workload, flops


def _checked(run, trainer, mode):
    """`run`, failing if the step retraces once it has been traced (the timing would include
    tracing)."""
    traces = [None]

    def checked():
        run()
        count = timing.tracing_count(trainer)
        if traces[0] is not None and count != traces[0]:
            raise RuntimeError(f"the {mode} step retraced after its first call")
        traces[0] = count

    return checked


def _rows(name, times, steps, batch_size, flops, peak, extra=None):
    """One row per runner: its rates at the median round, its raw rounds (seconds per step,
    from which every statistic printed can be recomputed) and their spread."""
    rows = []
    for runner, seconds in times.items():
        rounds = [t / steps[runner] for t in seconds]
        k = int(runner.rpartition("_k")[2]) if "_k" in runner else 1
        spread = stats.spread(rounds)
        rows.append({"workload": name, "mode": runner, "batch_size": batch_size,
                     "steps_per_execution": k, "flops_per_step": flops,
                     **timing.rates(statistics.median(rounds), batch_size, flops, peak),
                     "rounds_s_per_step": rounds, "spread_pct": spread,
                     "noisy": spread > NOISE_PCT, **(extra or {})})
    return rows


def per_step(times, steps):
    return {runner: [t / steps[runner] for t in seconds] for runner, seconds in times.items()}


def measure_workload(spec, settings, peak_by_dtype, log=print):
    """Rows and ratios of one workload (`WorkloadSpec`): its step in each mode on one batch,
    the loop and `fit` at each steps per call, the XLA loop and `fit(jit_compile=True)`."""
    runners, steps, first, workload, flops = _runners(spec, settings, log)
    name = workload.name
    if not runners:
        log(f"  {name}: none of --runners {','.join(settings.runners)} is in this table")
        return [], [], None
    warm, memory = {}, {}
    times = timing.interleaved(runners, settings.rounds(name), settings.warmup, settings.budget,
                               first_calls=warm, memory=memory)
    peak = peak_by_dtype.get(_compute_dtype(workload.model))
    rows = _rows(name, times, steps, workload.batch_size, flops, peak,
                 {"compute_dtype": _compute_dtype(workload.model)})
    for row in rows:  # the step's first call in each mode; a loop's or fit's first round
        row["first_call_s"] = first.get(row["mode"], warm.get(row["mode"]))
        row["peak_host_bytes"] = memory[row["mode"]]["host_bytes"]
        row["peak_device_bytes"] = memory[row["mode"]]["device_bytes"]
    step_times = per_step(times, steps)
    ratios = [stats.compare(name, a, b, step_times)
              for a, b in comparisons(name, settings.level) if a in times and b in times]
    best = recommend(name, step_times)
    if best is not None:
        best["auto"] = auto_choice(step_times, {**warm, **first})
    return rows, ratios, best


def _train_settings(runners):
    """`{runner: (mode, k)}` of the runners that `train` runs (`loop_k8`, `xla_loop_k32`)."""
    settings = {}
    for runner in runners:
        kind, found, k = runner.rpartition("_k")
        mode = {"loop": "function", "xla_loop": "xla"}.get(kind)
        if found and mode:
            settings[runner] = (mode, int(k))
    return settings


def auto_choice(step_times, first_calls):
    """What `mode="auto", steps_per_execution="auto"` settles on in a long run, by its rule
    (`spec_impl.trainer.auto.Calibration`) on this run's times: the loop runners' median per
    step (`loop_kN` as function at k, `xla_loop_kN` as XLA at k, the one-step `xla` row as XLA
    at k = 1) and their first calls. Returns the runner it picks and its time over the fastest
    `train` setting measured (1.0: auto picked the best)."""
    runner_of = {("function", 1): "loop_k1", ("xla", 1): "xla"}
    runner_of.update({setting: runner for runner, setting in _train_settings(step_times).items()})
    cost = {s: statistics.median(step_times[r]) for s, r in runner_of.items() if r in step_times}
    calibration = Calibration(AUTO_MODES, sorted({k for _, k in cost}), unroll=XLA_UNROLL)
    while not calibration.done:
        setting = calibration.current
        if setting not in cost:  # not measured here
            calibration.finish()
            break
        k = setting[1]
        calibration.record(setting, first_calls.get(runner_of[setting], cost[setting] * k)
                           if setting not in calibration.first_call else cost[setting] * k, k)
    if calibration.choice not in cost:  # the table has no loop at one step per call
        return {"runner": None, "vs_fastest": None}
    fastest = min(t for s, t in cost.items() if s[1] > 1 or s == ("function", 1))
    mode, k = calibration.choice
    return {"runner": runner_of[calibration.choice], "mode": mode, "steps_per_execution": k,
            "vs_fastest": cost[calibration.choice] / fastest}


def recommend(name, step_times):
    """The fastest `train` setting measured for `name` (`loop_k*` / `xla_loop_k*`, by median
    time per step), its time ratio to the user's default `model.fit` (`fit_k1`) with the
    interval, and the call that gets it."""
    settings = _train_settings(step_times)
    if not settings or "fit_k1" not in step_times:  # --runners left them out
        return None
    best = min(settings, key=lambda r: statistics.median(step_times[r]))
    mode, k = settings[best]
    return {"workload": name, "runner": best, "mode": mode, "steps_per_execution": k,
            "ms_per_step": 1e3 * statistics.median(step_times[best]),
            "vs_fit_k1": stats.compare(name, best, "fit_k1", step_times),
            "call": f"train(model, ..., mode={mode!r}, steps_per_execution={k})"}


def measure_precision(spec, policy, settings, peak_by_dtype):
    """The function-mode step of `spec` (a `WorkloadSpec` or a workload's name) in float32 and
    under `policy`, interleaved: rows and the ratio `<policy> / float32`."""
    spec = WorkloadSpec(spec) if isinstance(spec, str) else spec
    name = spec.name
    workloads, runners = {}, {}
    for label in ("float32", policy):
        with global_policy(label):
            workload = spec.build()
        trainer = timing.make_trainer(workload, "function")
        workloads[label] = (workload, trainer)
        runners[label] = timing.same_batch_runner(trainer, workload, settings.steps(name))
    times = timing.interleaved(runners, settings.rounds(name), settings.warmup, settings.budget)
    steps = dict.fromkeys(runners, settings.steps(name))
    rows = []
    for label, (workload, trainer) in workloads.items():
        dtype = _compute_dtype(workload.model)
        rows += _rows(f"{name}_{label}", {"function": times[label]}, {"function": steps[label]},
                      workload.batch_size, timing.step_flops(trainer, workload),
                      peak_by_dtype.get(dtype), {"compute_dtype": dtype})
    step_times = per_step(times, steps)
    return rows, [stats.compare(f"{name}:precision", policy, "float32", step_times)]


def bench_eval_loop(settings):
    """Document 002's evaluation loop: 10,000 samples, batch 32, the MNIST MLP, eagerly, in a
    `tf.function` and with `model.evaluate`, interleaved."""
    workload = build_workload("mnist_mlp", EVAL_BATCH)
    x, y, dataset = timing.eval_data()
    if settings.level == "smoke":
        x, y, dataset = x[:256], y[:256], dataset.take(8)
    runners = {}
    for mode in ("eager", "function"):
        trainer = timing.make_trainer(workload, mode)
        runners[mode] = lambda t=trainer: t.evaluate(dataset)
    model = build_workload("mnist_mlp", EVAL_BATCH).model
    model.compile(loss="sparse_categorical_crossentropy")
    runners["evaluate"] = lambda: model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0)
    times = timing.interleaved(runners, 2 if settings.level == "smoke" else MIN_ROUNDS, settings.warmup)
    result = {mode: statistics.median(t) for mode, t in times.items()}
    result["document_speedup"] = DOC_EVAL_SPEEDUP
    return result, [stats.compare("eval_loop", "function", "eager", times),
                    stats.compare("eval_loop", "function", "evaluate", times)]


def bench_retracing(settings, calls=10):
    """Per-call cost of a `tf.function` fed new Python scalars (a trace each) vs tensors."""
    from spec_impl.autodiff import cube

    tensors = tf.function(cube)
    counter = iter(range(10**9))
    scalar_fns = []

    def python_scalars():
        fn = tf.function(cube)  # a fresh function: every call below traces
        scalar_fns.append(fn)
        for _ in range(calls):
            float(fn(next(counter)))

    def tensor_calls():
        for i in range(calls):
            float(tensors(tf.constant(float(i))))

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the retracing this measures on purpose is not a warning here
    try:
        times = timing.interleaved({"python_scalar": python_scalars, "tensor": tensor_calls},
                                   2 if settings.level == "smoke" else MIN_ROUNDS, warmup=1)
    finally:
        logger.setLevel(level)
    result = {"python_scalar_ms": 1e3 * statistics.median(times["python_scalar"]) / calls,
              "tensor_ms": 1e3 * statistics.median(times["tensor"]) / calls,
              "scalar_traces": scalar_fns[-1].experimental_get_tracing_count(),
              "tensor_traces": tensors.experimental_get_tracing_count()}
    return result, [stats.compare("retracing", "python_scalar", "tensor", times)]


def bench_scaling(settings):
    """ms/step of the loop (function mode) at each batch size of `settings.scaling`."""
    rows = []
    for name, sizes in settings.scaling.items():
        for b in sizes:
            workload = build_workload(name, b)
            trainer = timing.make_trainer(workload, "function")
            steps = settings.steps(name)
            runner = timing.loop_runner(trainer, workload.dataset(steps))
            times = timing.interleaved({"loop": runner}, min(3, settings.rounds(name)),
                                       settings.warmup)["loop"]
            seconds = statistics.median(times) / steps
            rows.append({"workload": name, "batch_size": b, "ms_per_step": 1e3 * seconds,
                         "samples_per_s": b / seconds})
    return rows


def bench_distributed(settings, devices, log=print):
    """Rows and ratios of the distributed table: each of `DISTRIBUTED_WORKLOADS` with no
    strategy and on 1, 2, ... `devices` mirrored devices, at one global batch, interleaved."""
    rows, ratios = [], []
    replicas = tuple(n for n in REPLICAS if n < devices) + (devices,)
    for name in DISTRIBUTED_WORKLOADS:
        log(f"timing {name} with no strategy and on {', '.join(map(str, replicas))} replicas ...")
        steps = settings.steps(name)
        runners = {}
        for n in (None, *replicas):
            workload, trainer = timing.distributed_trainer(name, n)
            runners["none" if n is None else f"replicas_{n}"] = timing.loop_runner(
                trainer, workload.dataset(steps))
        times = timing.interleaved(runners, settings.rounds(name), settings.warmup, settings.budget)
        step_times = {k: [t / steps for t in v] for k, v in times.items()}
        for key, values in step_times.items():
            seconds = statistics.median(values)
            rows.append({"workload": name, "replicas": None if key == "none" else int(key[9:]),
                         "batch_size": DISTRIBUTED_BATCH, "ms_per_step": 1e3 * seconds,
                         "samples_per_s": DISTRIBUTED_BATCH / seconds})
            if key != "none":
                ratios.append(stats.compare(name, key, "none", step_times))
    return rows, ratios


def run_distributed_suite(devices, settings=None, log=print):
    """`spec-impl bench --strategy mirrored --devices N`: the distributed table alone."""
    settings = settings or BenchSettings()
    start = time.perf_counter()
    rows, ratios = bench_distributed(settings, devices, log)
    return {"schema_version": SCHEMA_VERSION, "machine": timing.machine_info("cpu"),
            "level": settings.level, "distributed": rows,
            "ratios": ratios, "seconds": time.perf_counter() - start}


def run_suite(settings=None, device="cpu", models=None, log=print, on_table=None):
    """Run everything on `device`; returns the results as a JSON-ready dict.

    Args:
        settings: how long to measure (and which runners: `BenchSettings.runners`).
        device: `"cpu"` or `"gpu"`.
        models: `WorkloadSpec`s to time instead of the five workloads (then only their tables
            and ratios are measured).
        on_table: called with the results so far after each workload's table, so that a run
            stopped midway keeps what it finished (`spec-impl bench --json` writes them).
    """
    settings = settings or BenchSettings()
    start = time.perf_counter()
    specs = models or [WorkloadSpec(name) for name in WORKLOADS
                       if not quick_skips(name, settings.level)]
    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        peak, theoretical, matmul = timing.peaks(device)
        machine = {**timing.machine_info(device), "peak": theoretical}
        results = {"schema_version": SCHEMA_VERSION, "machine": machine,
                   "level": settings.level, "selection": selection(settings, models),
                   "peak_gflops": theoretical["gflops"], "best_matmul": matmul,
                   "train_steps": [], "ratios": [], "complete": False}
        log(peak_line(results))
        if models is None and settings.level == "quick":
            results["not_timed"] = [
                f"{name}: left out at --quick (a step takes about a second; the full run, or "
                f"--quick --model {name}, times it)"
                for name in WORKLOADS if quick_skips(name, settings.level)]
            for line in results["not_timed"]:
                log(line)
        results["recommendations"] = []
        for spec in specs:
            log(f"timing {spec.name} at steps per call "
                f"{step_counts(spec.name, settings.level)} ...")
            rows, ratios, best = measure_workload(spec, settings, peak, log)
            results["train_steps"] += rows
            results["ratios"] += ratios
            if best is not None:
                results["recommendations"].append(best)
            if on_table is not None:
                on_table(results)
        _precision(results, specs, settings, device, peak, log)
        if models is None and settings.runners is None:
            _extras(results, settings, log)
    results["seconds"] = time.perf_counter() - start
    results["complete"] = True
    return results


def selection(settings, models):
    """What a run measured, for `--compare` to measure again: the level, the models (`None`:
    the default workloads) and the runners (`None`: all)."""
    return {"level": settings.level, "models": None if models is None else [
        {"name": m.name, "batch_size": m.batch_size,
         "input_shape": None if m.input_shape is None else list(m.input_shape), "loss": m.loss}
        for m in models], "runners": None if settings.runners is None else list(settings.runners)}


def _precision(results, specs, settings, device, peak, log):
    """Mixed precision against float32, where the device computes it natively: on a GPU,
    MiniInception in mixed_float16 at batch 256 (as document 000 trained it); on a CPU with
    bfloat16 instructions (`BF16_FLAGS`), every workload of the run in mixed_bfloat16 (a
    `.keras` file keeps its own policy, so it is left out). Elsewhere the run says why not.
    A faster precision is added to the workload's recommendation."""
    if device == "gpu":
        plan = [("mini_inception", "mixed_float16", GPU_MIXED_BATCH)]
    elif timing.has_bf16_instructions(results["machine"]):
        plan = [(s.name, "mixed_bfloat16", s.batch_size) for s in specs
                if not s.name.endswith(".keras")]
    else:
        results["precision_skipped"] = (
            f"this CPU has no bfloat16 instructions ({', '.join(BF16_FLAGS)} absent): "
            f"mixed_bfloat16 would run emulated, so it is not timed")
        log(results["precision_skipped"])
        return
    results["precision"] = []
    by_name = {s.name: s for s in specs}
    for name, policy, batch in plan:
        log(f"timing {name} in {policy} against float32 ...")
        spec = by_name.get(name, WorkloadSpec(name))
        rows, ratios = measure_precision(dataclasses.replace(spec, batch_size=batch), policy,
                                         settings, peak)
        results["precision"] += rows
        results["ratios"] += ratios
        for best in results["recommendations"]:
            if best["workload"] == name and ratios[0]["verdict"] == "faster":
                best["precision"] = {"policy": policy, "vs_float32": ratios[0]}


def _extras(results, settings, log):
    """The evaluation loop, retracing and batch scaling (the default run)."""
    log("timing the evaluation loop, retracing and batch scaling ...")
    results["eval_loop"], ratios = bench_eval_loop(settings)
    results["ratios"] += ratios
    results["retracing"], ratios = bench_retracing(settings)
    results["ratios"] += ratios
    results["scaling"] = bench_scaling(settings)
