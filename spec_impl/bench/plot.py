"""The speed-up chart: each runner's speed relative to `fit_k1`, per workload, on a log axis."""

import matplotlib
import numpy as np

from spec_impl.saving import save_figure_atomic

SPEEDUP_BASE = "fit_k1"
CHART_RUNNERS = ("eager", "function", "xla", "loop_k1", "loop_k8", "loop_k32", "fit_k8",
                 "fit_k32", "xla_loop_k8", "xla_loop_k32", "fit_xla_k8", "fit_xla_k32")


def speedups(results):
    """`{workload: {runner: fit_k1's ms/step / the runner's}}` (> 1: faster than fit_k1)."""
    ms = {}
    for row in results["train_steps"]:
        ms.setdefault(row["workload"], {})[row["mode"]] = row["ms_per_step"]
    return {name: {runner: runs[SPEEDUP_BASE] / value for runner, value in runs.items()}
            for name, runs in ms.items() if SPEEDUP_BASE in runs}


def plot(results, path):
    """Write the chart to `path` (PNG); returns `path`."""
    from spec_impl._plot import new_figure

    table = speedups(results)
    names = list(table)
    runners = [r for r in CHART_RUNNERS if any(r in table[n] for n in names)]
    figure = new_figure((11, 4.8))
    axes = figure.add_subplot()
    width = 0.84 / max(1, len(runners))
    colours = matplotlib.colormaps["tab20"].colors  # one colour per runner (the default has 10)
    for i, runner in enumerate(runners):
        # A workload timed without this runner (a slow one stops at k = 8) leaves a gap.
        values = [table[n].get(runner, np.nan) for n in names]
        axes.bar(np.arange(len(names)) + (i - (len(runners) - 1) / 2) * width, values, width,
                 label=runner, color=colours[i % len(colours)])
    axes.axhline(1.0, color="black", linewidth=0.8)
    axes.set_xticks(np.arange(len(names)), labels=names, rotation=12)
    axes.set_yscale("log")
    axes.set_ylabel(f"speed relative to {SPEEDUP_BASE} (log; > 1 faster)")
    m = results["machine"]
    axes.set_title(f"Training speed per step against fit: {m['cpu']}, {m['cores']} cores, "
                   f"TF {m['tensorflow']}, {m.get('date', '')}", fontsize=9)
    axes.legend(ncol=4, fontsize=7)
    figure.tight_layout()
    save_figure_atomic(figure, path)
    return path


def plot_comparison(comparison, path):
    """Write the comparison chart to `path`: each runner's ratio new / base with its interval,
    on a log axis (< 1: new is faster); returns `path`."""
    from spec_impl._plot import new_figure

    rows = comparison["rows"]
    figure = new_figure((8, 0.3 * len(rows) + 1.5))
    axes = figure.add_subplot()
    y = np.arange(len(rows))
    values = np.array([r["value"] for r in rows])
    low = np.array([r["low"] if r["low"] is not None else r["value"] for r in rows])
    high = np.array([r["high"] if r["high"] is not None else r["value"] for r in rows])
    colours = {"faster": "tab:green", "slower": "tab:red"}
    axes.errorbar(values, y, xerr=[values - low, high - values], fmt="none", ecolor="grey")
    axes.scatter(values, y, c=[colours.get(r["verdict"], "tab:blue") for r in rows], zorder=3)
    axes.axvline(1.0, color="black", linewidth=0.8)
    axes.set_yticks(y, labels=[f"{r['workload']} {r['runner']}" for r in rows], fontsize=7)
    axes.set_xscale("log")
    axes.set_xlabel("time per step, new / base (log; < 1: new is faster), 95 % interval")
    figure.tight_layout()
    save_figure_atomic(figure, path)
    return path
