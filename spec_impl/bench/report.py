"""The tables `spec-impl bench` prints, and its JSON."""

from spec_impl.bench.settings import EVAL_BATCH, EVAL_SAMPLES, NOISE_PCT
from spec_impl.bench.stats import format_ratio
from spec_impl.saving import write_atomic_text


def _fmt(value, pattern):
    return "-" if value is None else pattern.format(value)


def peak_line(results):
    """`Peak: float32 199.1 GFLOP/s (2 cores x 3.11 GHz x 32 FLOPs/cycle, AVX2 + FMA; clock
    measured (dependent adds)), ...; best matmul float32 155.0 (numpy n=2048), ...`."""
    theoretical = results.get("machine", {}).get("peak") or {}
    parts = []
    for dtype, gflops in (theoretical.get("gflops") or {}).items():
        parts.append(f"{dtype} {gflops:.1f} GFLOP/s ({theoretical['cores']} cores x "
                     f"{theoretical['clock_ghz']:.2f} GHz x "
                     f"{theoretical['flops_per_cycle'][dtype]} FLOPs/cycle, "
                     f"{theoretical['units'][dtype]})")
    line = "Peak: " + ("; ".join(parts) if parts else theoretical.get("note", "not known"))
    if theoretical.get("clock_source"):
        line += f"; clock from {theoretical['clock_source']}"
    matmul = results.get("best_matmul") or {}
    if matmul:
        line += "; best matmul " + ", ".join(f"{d} {m['gflops']:.1f} ({m['by']})"
                                             for d, m in matmul.items()) + " GFLOP/s"
    return line


def _machine_line(results):
    m = results["machine"]
    line = (f"Machine: {m['cpu']}, {m['cores']} cores, TensorFlow {m['tensorflow']}, "
            f"Keras {m['keras']}, device {m.get('device', 'cpu')}, {m.get('date', '')}")
    if m.get("peak") or results.get("best_matmul"):
        line += "\n" + peak_line(results)
    return line


def _megabytes(row):
    """The runner's peak memory in MB: the device's on a GPU, else the host's."""
    value = row.get("peak_device_bytes") or row.get("peak_host_bytes")
    return None if value is None else value / 2**20


def format_ratios(ratios, workload):
    """One line per comparison of `workload`: `name  value [low, high] verdict`."""
    width = max((len(r["name"]) for r in ratios if r["workload"] == workload), default=0)
    return [f"    {r['name']:<{width}}  {format_ratio(r)}" for r in ratios
            if r["workload"] == workload]


def format_recommendation(best):
    """The lines of one `suite.recommend` record: the call, and its speed against `fit_k1`."""
    ratio = best["vs_fit_k1"]
    lines = [f"{best['workload']}: {best['call']}",
             f"    {best['ms_per_step']:.3f} ms/step; {best['runner']} / fit_k1 "
             f"{format_ratio(ratio)} ({1 / ratio['value']:.2f}x fit's speed)"]
    if best.get("auto", {}).get("runner"):
        a = best["auto"]
        lines.append(f"    mode='auto', steps_per_execution='auto' in a long run, by its rule on "
                     f"these times: {a['mode']}, k = {a['steps_per_execution']} (row "
                     f"{a['runner']}), {a['vs_fastest']:.2f}x the fastest's time")
    if "precision" in best:
        p = best["precision"]
        lines.append(f"    and under keras.mixed_precision.set_global_policy({p['policy']!r}): "
                     f"{p['vs_float32']['name']} {format_ratio(p['vs_float32'])}")
    return lines


def _step_table(rows, ratios, name):
    first = rows[0]
    lines = [f"{name} (batch {first['batch_size']}, {_fmt(first['flops_per_step'], '{:,}')} "
             f"FLOPs/step, computes in {first.get('compute_dtype', 'float32')}, "
             f"{len(first.get('rounds_s_per_step', ()))} rounds)",
             f"  {'runner':<14}{'ms/step':>10}{'samples/s':>12}{'GFLOP/s':>10}{'% peak':>8}"
             f"{'% matmul':>10}{'first call s':>14}{'peak MB':>9}{'spread':>8}"]
    for r in rows:
        noisy = "  noisy" if r.get("noisy") else ""
        lines.append(f"  {r['mode']:<14}{r['ms_per_step']:>10.3f}{r['samples_per_s']:>12.0f}"
                     f"{_fmt(r['gflops'], '{:.1f}'):>10}{_fmt(r['pct_of_peak'], '{:.0f}%'):>8}"
                     f"{_fmt(r.get('pct_of_matmul'), '{:.0f}%'):>10}"
                     f"{_fmt(r.get('first_call_s'), '{:.2f}'):>14}"
                     f"{_fmt(_megabytes(r), '{:.0f}'):>9}"
                     f"{_fmt(r.get('spread_pct'), '{:.0f}%'):>8}{noisy}")
    lines.append("  % peak: of the theoretical peak (cores x clock x FLOPs per cycle); % matmul: "
                 "of the best matmul measured")
    lines.append(f"  peak MB: the process's resident memory (a GPU's own) in one untimed call; "
                 f"spread: interquartile range / median of the rounds (noisy above "
                 f"{NOISE_PCT:.0f} %)")
    lines.append("  time ratios (< 1: the first is faster), median of the rounds' ratios, 95 % "
                 "sign-test interval:")
    return lines + format_ratios(ratios, name) + [""]


def format_tables(results):
    """One table per workload with its ratios, then precision, evaluation loop, retracing and
    scaling where the run measured them."""
    lines = [_machine_line(results), ""]
    by_workload = {}
    for row in results["train_steps"]:
        by_workload.setdefault(row["workload"], []).append(row)
    ratios = results.get("ratios", [])
    for name, rows in by_workload.items():
        lines += _step_table(rows, ratios, name)
    if "precision" in results:
        lines.append("Mixed precision: the function-mode step, interleaved with float32's")
        for r in results["precision"]:
            lines.append(f"  {r['workload']:<32}{r['ms_per_step']:>10.2f} ms/step, "
                         f"{_fmt(r['pct_of_peak'], '{:.0f}%')} of the {r['compute_dtype']} peak, "
                         f"{_fmt(r.get('pct_of_matmul'), '{:.0f}%')} of its best matmul")
        for name in dict.fromkeys(r["workload"] for r in ratios
                                  if r["workload"].endswith(":precision")):
            lines += format_ratios(ratios, name)
        lines.append("")
    for line in results.get("not_timed", []):
        lines += [f"Not timed: {line}.", ""]
    if "precision_skipped" in results:
        lines += [f"Mixed precision: {results['precision_skipped']}.", ""]
    if results.get("recommendations"):
        lines.append("Fastest measured per model (time ratio to model.fit at one step per call, "
                     "95 % interval):")
        lines += [f"  {line}" for best in results["recommendations"]
                  for line in format_recommendation(best)]
        lines.append("")
    if "eval_loop" in results:
        e = results["eval_loop"]
        lines += [f"Evaluation loop (document 002: {EVAL_SAMPLES:,} samples, batch {EVAL_BATCH}, "
                  f"MLP; document: 1.80 s -> 0.8 s, x{e['document_speedup']:.2f})",
                  f"  eager {e['eager']:.2f} s, function {e['function']:.2f} s, "
                  f"model.evaluate {e['evaluate']:.2f} s"]
        lines += format_ratios(ratios, "eval_loop") + [""]
    if "retracing" in results:
        t = results["retracing"]
        lines += ["Retracing (document 003): a tf.function called with new Python scalars vs "
                  "tensors",
                  f"  {t['python_scalar_ms']:.2f} ms/call ({t['scalar_traces']} traces) vs "
                  f"{t['tensor_ms']:.3f} ms/call ({t['tensor_traces']} trace)"]
        lines += format_ratios(ratios, "retracing") + [""]
    if "scaling" in results:
        lines.append("Scaling (function mode): batch -> ms/step, samples/s")
        for name in dict.fromkeys(r["workload"] for r in results["scaling"]):
            cells = [f"{r['batch_size']}: {r['ms_per_step']:.2f} ms, {r['samples_per_s']:.0f}/s"
                     for r in results["scaling"] if r["workload"] == name]
            lines.append(f"  {name}: " + "; ".join(cells))
    if "seconds" in results:
        lines.append(f"\n(suite took {results['seconds']:.0f} s)")
    return "\n".join(lines)


def format_workload(results, name):
    """The table of the workload `name` alone, as soon as it is measured."""
    rows = [r for r in results["train_steps"] if r["workload"] == name]
    return "\n".join(_step_table(rows, results.get("ratios", []), name)) if rows else ""


def format_distributed(results):
    """The distributed table: ms/step, samples/s and the time ratio against no strategy."""
    lines = [_machine_line(results), "",
             "Distributed: the package's loop (function mode) under MirroredStrategy, one global "
             "batch; time ratios against no strategy with their 95 % interval",
             f"  {'workload':<16}{'replicas':>9}{'ms/step':>10}{'samples/s':>11}"]
    for r in results["distributed"]:
        replicas = "none" if r["replicas"] is None else str(r["replicas"])
        lines.append(f"  {r['workload']:<16}{replicas:>9}{r['ms_per_step']:>10.2f}"
                     f"{r['samples_per_s']:>11.0f}")
    for name in dict.fromkeys(r["workload"] for r in results["distributed"]):
        lines += [f"  {name}:"] + format_ratios(results["ratios"], name)
    lines.append(f"\n(suite took {results['seconds']:.0f} s)")
    return "\n".join(lines)


def write_json(results, path):
    import json

    write_atomic_text(path, json.dumps(results, indent=2, default=float))
