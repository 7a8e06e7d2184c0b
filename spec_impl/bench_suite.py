"""`spec-impl bench`: run the benchmark suite, print its tables, write JSON and a bar chart."""

import json
import os
import time

import numpy as np
import tensorflow as tf

from spec_impl.bench import (
    DISTRIBUTED_BATCH,
    DISTRIBUTED_WORKLOADS,
    DOC_EVAL_SPEEDUP,
    EVAL_BATCH,
    EVAL_SAMPLES,
    GPU_MIXED_BATCH,
    MODES,
    PLAN,
    QUICK_SCALING,
    REPLICAS,
    SCALING,
    STEPS_PER_EXECUTION,
    WORKLOADS,
    build_workload,
    distributed_step_seconds,
    eval_data,
    loop_and_fit_step_seconds,
    loop_step_seconds,
    machine_info,
    make_trainer,
    median_seconds,
    peak_gflops,
    plan_steps,
    rates,
    step_flops,
    step_seconds,
    timed,
    tracing_count,
)
from spec_impl.trainer.precision import global_policy


def _rounds(name, quick):
    rounds = PLAN[name][1]
    return max(2, rounds // 2) if quick else rounds


def bench_train_steps(name, quick, peak, batch_size=None, modes=MODES,
                      steps_per_execution=STEPS_PER_EXECUTION):
    """ms/step of the train step in each of `modes` (the step alone, on one fixed batch), then
    the whole loop (`train_function` over a dataset, function mode) and `fit` over the same
    batches at each of `steps_per_execution`; with first-call and FLOP figures."""
    steps, rounds = PLAN[name][0], _rounds(name, quick)
    workload = build_workload(name, batch_size)
    rows = []
    flops = None
    for mode in modes:
        trainer = make_trainer(workload, mode)
        first = timed(lambda t=trainer: float(t.train_step((workload.x, workload.y))))
        traces = tracing_count(trainer)
        seconds = step_seconds(trainer, workload, steps, rounds, warmup=1)
        if flops is None:
            flops = step_flops(trainer, workload)
        rows.append(_row(name, mode, workload.batch_size, seconds, flops, peak, first))
        retraces = tracing_count(trainer) - traces
        if retraces:
            raise RuntimeError(f"{name} [{mode}] retraced {retraces} times after its first step")
    for k in steps_per_execution:
        trainer = make_trainer(workload, "function", k)
        # A round of k = 32 runs 32 batches: fewer rounds for the slow models.
        k_rounds = max(1, min(rounds, rounds * steps // plan_steps(name, k)))
        loop, fit = loop_and_fit_step_seconds(trainer, workload, plan_steps(name, k), k_rounds)
        for runner, seconds in (("loop", loop), ("fit", fit)):
            row = _row(name, runner, workload.batch_size, seconds, flops, peak, None)
            rows.append({**row, "mode": f"{runner}_k{k}", "steps_per_execution": k})
    return rows


def _row(name, mode, batch_size, seconds, flops, peak, first_call):
    return {"workload": name, "mode": mode, "batch_size": batch_size, "flops_per_step": flops,
            **rates(seconds, batch_size, flops, peak), "first_call_s": first_call}


def bench_eval_loop(quick):
    """Document 002's evaluation loop: 10,000 samples, batch 32, the MNIST MLP."""
    rounds = 2 if quick else 5
    workload = build_workload("mnist_mlp", EVAL_BATCH)
    x, y, dataset = eval_data()
    result = {}
    for mode in ("eager", "function"):
        trainer = make_trainer(workload, mode)
        result[mode] = median_seconds(lambda t=trainer: t.evaluate(dataset), rounds)
    model = workload.model
    model.compile(loss="sparse_categorical_crossentropy")
    result["evaluate"] = median_seconds(
        lambda: model.evaluate(x, y, batch_size=EVAL_BATCH, verbose=0), rounds)
    result["speedup_eager_to_function"] = result["eager"] / result["function"]
    result["document_speedup"] = DOC_EVAL_SPEEDUP
    return result


def bench_retracing(calls=10):
    """Per-call cost of a `tf.function` fed new Python scalars (a trace each) vs tensors."""
    from spec_impl.autodiff import cube

    scalars = tf.function(cube)
    tensors = tf.function(cube)
    tensors(tf.constant(0.0))  # the one trace tensors need
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")  # the retracing this measures on purpose is not a warning here
    try:
        per_scalar = timed(lambda: [float(scalars(i)) for i in range(calls)]) / calls
    finally:
        logger.setLevel(level)
    per_tensor = timed(lambda: [float(tensors(tf.constant(float(i)))) for i in range(calls)]) / calls
    return {"python_scalar_ms": 1e3 * per_scalar, "tensor_ms": 1e3 * per_tensor,
            "scalar_traces": scalars.experimental_get_tracing_count(),
            "tensor_traces": tensors.experimental_get_tracing_count(),
            "ratio": per_scalar / per_tensor}


def bench_scaling(quick):
    rows = []
    for name, sizes in (QUICK_SCALING if quick else SCALING).items():
        for b in sizes:
            workload = build_workload(name, b)
            trainer = make_trainer(workload, "function")
            seconds = loop_step_seconds(trainer, workload, plan_steps(name), rounds=2 if quick else 3)
            rows.append({"workload": name, "batch_size": b, "ms_per_step": 1e3 * seconds,
                         "samples_per_s": b / seconds})
    return rows


def bench_distributed(quick, devices, log=print):
    """Rows of the distributed table: each of `DISTRIBUTED_WORKLOADS` with no strategy and on
    1, 2, ... `devices` mirrored devices, at one global batch; `overhead` is the step time over
    the no-strategy step's, measured in the same rounds."""
    rows = []
    replicas = tuple(n for n in REPLICAS if n < devices) + (devices,)
    for name in DISTRIBUTED_WORKLOADS:
        log(f"timing {name} with no strategy and on {', '.join(map(str, replicas))} replicas ...")
        seconds = distributed_step_seconds(name, replicas, plan_steps(name),
                                           rounds=2 if quick else PLAN[name][1])
        for n, t in seconds.items():
            rows.append({"workload": name, "replicas": n, "batch_size": DISTRIBUTED_BATCH,
                         "ms_per_step": 1e3 * t, "samples_per_s": DISTRIBUTED_BATCH / t,
                         "overhead": t / seconds[None]})
    return rows


def run_distributed_suite(devices, quick=False, log=print):
    """`spec-impl bench --strategy mirrored --devices N`: the distributed table alone."""
    start = time.perf_counter()
    results = {"machine": machine_info("cpu"), "quick": quick,
               "distributed": bench_distributed(quick, devices, log)}
    results["seconds"] = time.perf_counter() - start
    return results


def format_distributed(results):
    """The distributed table: ms/step, samples/s and overhead against no strategy."""
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, "
             f"Keras {m['keras']}", "",
             f"Distributed: the package's loop (function mode) under MirroredStrategy, global "
             f"batch {DISTRIBUTED_BATCH}; overhead = step time / the no-strategy step's",
             f"  {'workload':<16}{'replicas':>9}{'ms/step':>10}{'samples/s':>11}{'overhead':>10}"]
    for r in results["distributed"]:
        replicas = "none" if r["replicas"] is None else str(r["replicas"])
        lines.append(f"  {r['workload']:<16}{replicas:>9}{r['ms_per_step']:>10.2f}"
                     f"{r['samples_per_s']:>11.0f}{r['overhead']:>9.2f}x")
    lines.append(f"\n(suite took {results['seconds']:.0f} s)")
    return "\n".join(lines)


def run_suite(quick=False, device="cpu", workloads=WORKLOADS, log=print):
    """Run everything on `device`; returns the results as a JSON-ready dict."""
    start = time.perf_counter()
    with tf.device("/GPU:0" if device == "gpu" else "/CPU:0"):
        results = {"machine": machine_info(device), "quick": quick, "peak_gflops": peak_gflops()}
        log(f"peak: {results['peak_gflops']:.1f} GFLOP/s ({2048}x{2048} float32 matmul)")
        results["train_steps"] = []
        for name in workloads:
            log(f"timing {name} ...")
            results["train_steps"] += bench_train_steps(name, quick, results["peak_gflops"])
        # Document 000 trained MiniInception in mixed_float16 at batch 256 on a GPU; a CPU has
        # no fast float16, and oneDNN may (or may not) speed up bfloat16.
        policy, batch = (("mixed_float16", GPU_MIXED_BATCH) if device == "gpu"
                         else ("mixed_bfloat16", None))
        log(f"timing mini_inception in {policy} ...")
        with global_policy(policy):  # the step in function mode is what the ratio needs
            rows = bench_train_steps("mini_inception", quick, results["peak_gflops"], batch,
                                     modes=("function",), steps_per_execution=())
        for row in rows:
            row["workload"] = f"mini_inception_{policy}"
        results["train_steps"] += rows
        log("timing the evaluation loop, retracing and batch scaling ...")
        results["eval_loop"] = bench_eval_loop(quick)
        results["retracing"] = bench_retracing()
        results["scaling"] = bench_scaling(quick)
    results["seconds"] = time.perf_counter() - start
    return results


def _fmt(value, pattern):
    return "-" if value is None else pattern.format(value)


def format_tables(results):
    """One table per workload, then the evaluation loop, retracing and scaling."""
    m = results["machine"]
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, "
             f"Keras {m['keras']}, device {m['device']}; matmul peak "
             f"{results['peak_gflops']:.1f} GFLOP/s", ""]
    by_workload = {}
    for row in results["train_steps"]:
        by_workload.setdefault(row["workload"], {})[row["mode"]] = row
    for name, rows in by_workload.items():
        b = next(iter(rows.values()))["batch_size"]
        lines.append(f"{name} (batch {b}, {_fmt(rows['function']['flops_per_step'], '{:,}')} FLOPs/step)")
        lines.append(f"  {'mode':<10}{'ms/step':>10}{'samples/s':>12}{'GFLOP/s':>10}"
                     f"{'% peak':>8}{'first call s':>14}")
        for mode in (*MODES, *(f"{r}_k{k}" for k in STEPS_PER_EXECUTION for r in ("loop", "fit"))):
            r = rows.get(mode)
            if r is None:
                continue
            lines.append(f"  {mode:<10}{r['ms_per_step']:>10.2f}{r['samples_per_s']:>12.0f}"
                         f"{_fmt(r['gflops'], '{:.1f}'):>10}{_fmt(r['pct_of_peak'], '{:.0f}%'):>8}"
                         f"{_fmt(r['first_call_s'], '{:.2f}'):>14}")
        ms = {mode: rows[mode]["ms_per_step"] for mode in rows}
        last = STEPS_PER_EXECUTION[-1]
        if {"eager", "xla", "loop_k1", f"loop_k{last}"} <= set(ms):
            lines.append(f"  eager -> function x{ms['eager'] / ms['function']:.1f}; "
                         f"function -> xla x{ms['function'] / ms['xla']:.2f}; "
                         f"loop_k1 / fixed-batch step = {ms['loop_k1'] / ms['function']:.2f}; "
                         f"loop k1 -> k{last} x{ms['loop_k1'] / ms[f'loop_k{last}']:.1f}")
            lines.append("  loop / fit (<= 1: the loop is as fast): " + ", ".join(
                f"k{k} {ms[f'loop_k{k}'] / ms[f'fit_k{k}']:.2f}" for k in STEPS_PER_EXECUTION))
        lines.append("")
    if "mini_inception" in by_workload:
        for name in by_workload:
            if name.startswith("mini_inception_mixed"):
                ratio = (by_workload["mini_inception"]["function"]["ms_per_step"]
                         / by_workload[name]["function"]["ms_per_step"])
                lines += [f"Mixed precision: {name[len('mini_inception_'):]} step x{ratio:.2f} "
                          f"the float32 step (> 1: faster)", ""]
    e = results["eval_loop"]
    lines += [f"Evaluation loop (document 002: {EVAL_SAMPLES:,} samples, batch {EVAL_BATCH}, MLP)",
              f"  eager {e['eager']:.2f} s, function {e['function']:.2f} s, model.evaluate "
              f"{e['evaluate']:.2f} s: x{e['speedup_eager_to_function']:.1f} "
              f"(document: 1.80 s -> 0.8 s, x{e['document_speedup']:.2f})", ""]
    t = results["retracing"]
    lines += ["Retracing (document 003): a tf.function called with new Python scalars vs tensors",
              f"  {t['python_scalar_ms']:.2f} ms/call ({t['scalar_traces']} traces) vs "
              f"{t['tensor_ms']:.3f} ms/call ({t['tensor_traces']} trace): x{t['ratio']:.0f}", ""]
    lines.append("Scaling (function mode): batch -> ms/step, samples/s")
    for name in dict.fromkeys(r["workload"] for r in results["scaling"]):
        cells = [f"{r['batch_size']}: {r['ms_per_step']:.2f} ms, {r['samples_per_s']:.0f}/s"
                 for r in results["scaling"] if r["workload"] == name]
        lines.append(f"  {name}: " + "; ".join(cells))
    lines.append(f"\n(suite took {results['seconds']:.0f} s)")
    return "\n".join(lines)


def write_json(results, path):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(results, f, indent=2, default=float)
    os.replace(tmp, path)


def plot(results, path):
    """A bar chart: ms/step per mode for each workload (log scale)."""
    from spec_impl._plot import new_figure

    names = list(dict.fromkeys(r["workload"] for r in results["train_steps"]))
    modes = (*MODES, "loop_k1", "fit_k1", f"loop_k{STEPS_PER_EXECUTION[-1]}",
             f"fit_k{STEPS_PER_EXECUTION[-1]}")
    figure = new_figure((10, 4.5))
    axes = figure.add_subplot()
    width = 0.8 / len(modes)
    ms = {(r["workload"], r["mode"]): r["ms_per_step"] for r in results["train_steps"]}
    for i, mode in enumerate(modes):
        # A workload timed in fewer modes (the mixed-precision one) leaves gaps, not an error.
        values = [ms.get((n, mode), np.nan) for n in names]
        axes.bar(np.arange(len(names)) + (i - (len(modes) - 1) / 2) * width, values, width,
                 label=mode)
    axes.set_xticks(np.arange(len(names)), labels=names, rotation=15)
    axes.set_yscale("log")
    axes.set_ylabel("ms per training step (log)")
    m = results["machine"]
    axes.set_title(f"Training step by mode: {m['cpu']}, TF {m['tensorflow']}")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    return path
