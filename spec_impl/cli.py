"""The `spec-impl` command line: `summary`, `train`, `bench`, `check` and `idioms`."""

import argparse
import math
import os
import re
import sys
import tempfile

from spec_impl._paths import BadPath, input_file, output_file, output_folder
from spec_impl._validation import MODES, POLICIES, STRATEGIES
from spec_impl.contract.command import add_parser as add_check_parser
from spec_impl.contract.sweep import add_parser as add_sweep_parser
from spec_impl.options import AUTO, ON_NAN, RunOptions

# What `spec-impl train` writes into --out: folders and files, checked before any work.
OUT_FOLDERS = ("checkpoints",)
OUT_FILES = ("model.keras", "report.txt", "confusion_matrix.png")
RUN = RunOptions()  # `spec-impl train`'s defaults are `train_and_evaluate`'s


def _import_tensorflow(verbose):
    """Import TensorFlow, keeping its C++ start-up lines (CUDA probing, CPU features) off the
    terminal unless `verbose`; they are printed after all if the import fails."""
    if verbose:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "0"
        import tensorflow

        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)  # the C++ side writes to file descriptor 2 directly
        try:
            import tensorflow  # noqa: F401  (imported for its side effects)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # e.g. retracing notes when the suite builds many steps


def _int_at_least(minimum, what):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, received {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "a non-negative integer")
_positive_int_k = _int_at_least(1, "a positive integer or auto")


def _positive_int_or_auto(text):
    return text if text == "auto" else _positive_int_k(text)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, received {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a non-negative number, received {text!r}")
    return value


_RUNNER = re.compile(r"^(eager|function|xla|(loop|fit|xla_loop|fit_xla)_k[1-9]\d*)$")


def _runner_list(text):
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if not _RUNNER.match(n)]
    if not names or bad:
        raise argparse.ArgumentTypeError(
            f"expected runner names separated by commas (eager, function, xla, loop_kN, fit_kN, "
            f"xla_loop_kN, fit_xla_kN), received {text!r}")
    return names


def cmd_summary(args):
    from spec_impl.registry import format_summary, summary_rows

    print(format_summary(summary_rows()))
    return 0


def check_train_paths(args):
    """Refuse, before any work, an --out, --log-dir or --data that the run could not use."""
    from spec_impl.data import IMAGE_DATASETS

    out = output_folder(args.out, "--out")
    for name in OUT_FOLDERS + OUT_FILES:
        path = os.path.join(out, name)
        if name in OUT_FOLDERS and os.path.exists(path) and not os.path.isdir(path):
            raise BadPath(f"--out {out}: {path} is a file, where the run keeps its {name}")
        if name in OUT_FILES and os.path.isdir(path):
            raise BadPath(f"--out {out}: {path} is a folder, where the run writes its {name}")
    if args.log_dir:
        output_folder(args.log_dir, "--log-dir")
    if args.data not in IMAGE_DATASETS and (args.data.endswith(".npz") or os.path.exists(args.data)):
        input_file(args.data, "--data")


def _failure(error, checkpoints):
    """One line for a run that failed: the error (an `OSError` by the file it could not write)
    and, unless it says so already, the last good checkpoint to resume from."""
    from spec_impl.trainer.checkpointing import CheckpointWriteError, checkpoint_numbers

    if isinstance(error, OSError) and not isinstance(error, CheckpointWriteError):
        numbers = checkpoint_numbers(checkpoints)
        where = os.path.join(checkpoints, f"ckpt-{numbers[0]}") if numbers else None
        resume = (f" The last checkpoint is {where}: fix the cause and rerun with --resume."
                  if where else " No checkpoint was written.")
        return f"could not write {error.filename or ''}: {error.strerror or error}.{resume}"
    return str(error)


def cmd_train(args):
    from spec_impl.trainer.checkpointing import (
        CheckpointMismatchError,
        CheckpointUnreadableError,
        CheckpointWriteError,
    )
    from spec_impl.trainer.preemption import PreemptionWatch, TrainingPreempted
    from spec_impl.workflow import train_and_evaluate

    def fail(message, code):
        print(f"spec-impl train: {message}", file=sys.stderr)
        return code

    # One watch for the whole command: a signal before `train` stops it at its first call, one
    # after the loop lets the model be saved and evaluated, then exits with the signal's code.
    with PreemptionWatch() as watch:
        try:
            run = train_and_evaluate(
                args.model, args.data, out=args.out, epochs=args.epochs,
                batch_size=args.batch_size, learning_rate=args.learning_rate, mode=args.mode,
                precision=args.precision, steps_per_execution=args.steps_per_execution,
                log_dir=args.log_dir, resume=args.resume, limit=args.limit, seed=args.seed,
                verbose=0 if args.quiet else 1, recalibrate_bn=args.recalibrate_bn,
                strategy=args.strategy, devices=args.devices, on_nan=args.on_nan,
                max_skipped=args.max_skipped)
        except TrainingPreempted as e:
            resume = "" if args.resume else " (add --resume)"
            return fail(f"{e} Rerun the same command to continue{resume}.", e.exit_code)
        except CheckpointMismatchError as e:  # the folder is fine, the settings differ
            return fail(e, 2)
        except (FloatingPointError, OSError, CheckpointUnreadableError) as e:
            if isinstance(e, OSError) and e.errno is None and not isinstance(e, CheckpointWriteError):
                return fail(e, 2)  # the package's own message: a dataset file or cache missing
            return fail(_failure(e, os.path.join(args.out, "checkpoints")), 1)  # the run failed
        except (ValueError, RuntimeError) as e:
            return fail(e, 2)  # bad arguments or a locked folder
    if not run.history.history:
        print(f"Nothing to train: the checkpoints in {run.checkpoint_dir} already reach "
              f"--epochs {args.epochs}; evaluated the restored model.")
    execution = run.history.params.get("execution") if run.history.params else None
    if execution:  # --mode auto / --steps-per-execution auto
        print(f"execution: {execution['mode']} mode, {execution['steps_per_execution']} step(s) "
              f"per call ({execution['source']}; ms per step: {execution['ms_per_step']})")
    result = run.evaluation
    print(result["report"])
    print(f"test accuracy {result['accuracy']:.4f}  ROC AUC (ovr) {result['roc_auc_ovr']:.4f}  "
          f"ROC AUC (document 000) {result['roc_auc_document']:.4f}")
    where = run.model_path or "written by the chief worker"
    print(f"model: {where}; report and confusion matrix in {args.out}"
          + (f"; TensorBoard: tensorboard --logdir {args.log_dir}" if args.log_dir else ""))
    if watch.signal is not None:  # received after training: everything above is written
        from spec_impl.trainer.preemption import EXIT_CODES

        return fail(f"{watch.signal.name} received after training; the run finished and its "
                    f"model and report are written.", EXIT_CODES[watch.signal])
    return 0


def check_json_path(args):
    """Refuse, before any work, a --json that could not be written."""
    if args.json:
        output_file(args.json, "--json")


def check_bench_paths(args):
    """Refuse, before the benchmark runs, a --json or --plot that could not be written, a
    --model or --compare file that cannot be read, and options that do not go together."""
    if args.compare:
        if len(args.compare) > 2:
            raise BadPath(f"--compare takes BASE.json and at most NEW.json; received "
                          f"{len(args.compare)} files")
        for path in args.compare:
            input_file(path, "--compare")
    elif args.fail_on_slower is not None or args.force:
        raise BadPath("--fail-on-slower and --force apply to --compare")
    check_json_path(args)
    if args.plot:
        output_file(args.plot, "--plot")
        from spec_impl._plot import new_figure

        formats = new_figure((1, 1)).canvas.get_supported_filetypes()
        extension = os.path.splitext(args.plot)[1].lstrip(".").lower()
        if extension and extension not in formats:
            raise BadPath(f"--plot {args.plot}: unknown image format {extension!r}; expected "
                          f"one of {', '.join(sorted(formats))} (or no extension for PNG)")
    for model in args.model or ():
        if model.endswith(".keras"):
            input_file(model, "--model")


def _bench_settings(args):
    from spec_impl.bench import BenchSettings

    return BenchSettings("smoke" if args.smoke else "quick" if args.quick else "full",
                         runners=args.runners)


def _model_specs(args):
    """`WorkloadSpec`s of the `--model` values, or `None` for the five workloads."""
    from spec_impl.bench import WorkloadSpec, parse_model

    if not args.model:
        if args.input_shape or args.loss:
            raise ValueError("--input-shape and --loss apply to --model")
        return None
    shape = None
    if args.input_shape:
        try:
            shape = tuple(int(d) for d in args.input_shape.split(","))
        except ValueError:
            shape = ()
        if not shape or min(shape) < 1:
            raise ValueError(f"--input-shape {args.input_shape!r}: expected positive sizes "
                             f"separated by commas, e.g. 28,28,1")
    return [WorkloadSpec(parse_model(m), args.batch_size, shape, args.loss) for m in args.model]


def cmd_bench(args):
    if args.strategy != "default" or args.devices is not None:
        return _bench_distributed(args)
    import tensorflow as tf

    from spec_impl.bench.plot import plot
    from spec_impl.bench.report import format_tables

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        print("spec-impl bench: --device gpu, but TensorFlow sees no GPU on this machine.",
              file=sys.stderr)
        return 2
    if args.compare:
        return _bench_compare(args)
    try:
        results = _run_bench(args, _bench_settings(args), _model_specs(args), args.device)
    except ValueError as e:
        print(f"spec-impl bench: {e}", file=sys.stderr)
        return 2
    except _Stopped as stop:
        return stop.report(args)
    print(format_tables(results))
    return _write_outputs(args, results, plot)


class _Stopped(Exception):
    """The benchmark was stopped by SIGTERM or SIGINT; holds the tables finished."""

    def __init__(self, signum, results):
        super().__init__(signum)
        self.signum, self.results = signum, results

    def report(self, args):
        import signal

        finished = len({r["workload"] for r in (self.results or {}).get("train_steps", [])})
        where = f"; {args.json} holds them" if args.json and finished else ""
        print(f"spec-impl bench: stopped by {signal.Signals(self.signum).name} after {finished} "
              f"finished table(s){where}.", file=sys.stderr)
        return 128 + self.signum


def _run_bench(args, settings, models, device):
    """`run_suite`, writing `--json` after every table (a stopped run keeps what it finished)
    and turning SIGTERM and SIGINT into `_Stopped`."""
    import signal

    from spec_impl.bench.report import format_workload, write_json
    from spec_impl.bench.suite import run_suite

    done = {}

    def on_table(results):
        done["results"] = results
        if results["train_steps"]:
            print(format_workload(results, results["train_steps"][-1]["workload"]),
                  file=sys.stderr, flush=True)
        if args.json:
            write_json(results, args.json)

    def stop(signum, frame):
        done["signal"] = signum
        raise _Stopped(signum, done.get("results"))

    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        return run_suite(settings, device=device, models=models, on_table=on_table,
                         log=lambda m: print(m, file=sys.stderr, flush=True))
    except Exception as error:
        # The signal's exception rises from whatever code it interrupted, which may wrap it
        # (Keras re-raises an error inside a model's build as a TypeError): still a stop.
        if "signal" in done and not isinstance(error, _Stopped):
            raise _Stopped(done["signal"], done.get("results")) from error
        raise
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _bench_compare(args):
    """`--compare BASE [NEW]`: the table (and `--plot`), exit 1 under `--fail-on-slower` when a
    runner is slower by more than that percentage, 2 for files that cannot be compared."""
    from spec_impl.bench import BenchSettings, WorkloadSpec
    from spec_impl.bench.compare import (
        IncomparableError,
        compare_results,
        format_comparison,
        load_results,
        regressions,
    )
    from spec_impl.bench.plot import plot_comparison
    from spec_impl.bench.report import write_json
    from spec_impl.bench.stats import format_ratio

    try:
        base = load_results(args.compare[0])
        if len(args.compare) == 2:
            new, new_name = load_results(args.compare[1]), args.compare[1]
        else:  # measure BASE's selection again, now
            chosen = base["selection"]
            settings = BenchSettings(chosen["level"], runners=None if chosen["runners"] is None
                                     else tuple(chosen["runners"]))
            models = None if chosen["models"] is None else [
                WorkloadSpec(m["name"], m["batch_size"], None if m["input_shape"] is None
                             else tuple(m["input_shape"]), m["loss"]) for m in chosen["models"]]
            new = _run_bench(args, settings, models, base["machine"].get("device", "cpu"))
            new_name = args.json or "this run"
            if args.json:
                write_json(new, args.json)
        comparison = compare_results(base, new, force=args.force)
    except (IncomparableError, ValueError) as e:
        print(f"spec-impl bench: {e}", file=sys.stderr)
        return 2
    except _Stopped as stop:
        return stop.report(args)
    print(format_comparison(comparison, args.compare[0], new_name))
    if args.plot:
        plot_comparison(comparison, args.plot)
        print(f"plot: {args.plot}")
    if args.fail_on_slower is not None:
        slower = regressions(comparison, args.fail_on_slower)
        if slower:
            print(f"spec-impl bench: slower by more than {args.fail_on_slower:g} %: "
                  + ", ".join(f"{r['workload']}/{r['runner']} {format_ratio(r)}" for r in slower),
                  file=sys.stderr)
            return 1
    return 0



def _write_outputs(args, results, plot=None):
    """Write `--json` (and `--plot`); a write that fails after the run (a full disk) is one
    line naming the file, exit 1: the tables printed above are complete."""
    from spec_impl.bench.report import write_json

    outputs = [("JSON", args.json, write_json)]
    if plot is not None:
        outputs.append(("plot", args.plot, plot))
    for what, path, write in outputs:
        if not path:
            continue
        try:
            write(results, path)
        except OSError as error:
            print(f"spec-impl {args.command}: could not write {path}: "
                  f"{error.strerror or error} (the tables above are complete)", file=sys.stderr)
            return 1
        print(f"{what}: {path}")
    return 0


def _bench_distributed(args):
    if args.strategy != "mirrored" or args.plot or args.device == "gpu" or args.model:
        print("spec-impl bench: the distributed table is `--strategy mirrored --devices N` "
              f"(CPU, in one process, no --plot or --model). Received: --strategy {args.strategy}",
              file=sys.stderr)
        return 2
    from spec_impl.trainer.distribute import cpu_devices

    devices = args.devices or 2
    cpu_devices(devices)  # before anything initialises TensorFlow's devices
    from spec_impl.bench.report import format_distributed
    from spec_impl.bench.suite import run_distributed_suite

    results = run_distributed_suite(devices, _bench_settings(args),
                                    log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_distributed(results))
    return _write_outputs(args, results)


def cmd_idioms(args):
    from spec_impl.idioms import format_matrix, matrix

    result = matrix()
    print(format_matrix(result))
    return _write_outputs(args, result)


def _add_strategy_arguments(parser, default_help):
    parser.add_argument("--strategy", choices=STRATEGIES, default=RUN.strategy, help=default_help)
    parser.add_argument("--devices", type=_positive_int, default=RUN.devices, metavar="N",
                        help="replicas of --strategy mirrored (GPUs, or N logical CPU devices)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="spec-impl",
        description="Executable specification and benchmarks for custom modeling in TF 2 / Keras 3.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's own log lines and warnings too")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="parameter counts of every model beside the documented ones")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train a classifier with the package's custom loop")
    p.add_argument("--model", default=RUN.model, help="a classifier name (see `summary`)")
    p.add_argument("--data", default=RUN.data,
                   help="digits (embedded), mnist, fashion_mnist, cifar10 (local Keras cache) or an .npz")
    p.add_argument("--epochs", type=_positive_int, default=RUN.epochs)
    p.add_argument("--batch-size", type=_positive_int, default=RUN.batch_size)
    p.add_argument("--learning-rate", type=_positive_float, default=RUN.learning_rate)
    p.add_argument("--mode", choices=(*MODES, AUTO), default=RUN.training.mode,
                   help="auto: time the first steps in function and xla mode, keep the faster")
    p.add_argument("--precision", choices=POLICIES,
                   default=RUN.precision, help="Keras dtype policy (mixed_float16 scales the loss)")
    p.add_argument("--steps-per-execution", type=_positive_int_or_auto,
                   default=RUN.training.steps_per_execution, metavar="K",
                   help="batches per compiled call (as fit's steps_per_execution); auto: time "
                        "1, 8 and 32 on the first steps, keep the fastest")
    p.add_argument("--log-dir", default=RUN.training.log_dir,
                   help="TensorBoard folder (train/ and validation/)")
    p.add_argument("--out", default=RUN.out, help="folder for the model, report, plots, checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--limit", type=_positive_int, default=RUN.limit, metavar="N",
                   help="use only the first N training samples")
    p.add_argument("--seed", type=_non_negative_int, default=RUN.seed)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--on-nan", choices=ON_NAN, default=RUN.training.on_nan,
                   help="a step with a non-finite loss or gradient: stop the run (exit 1), or "
                        "skip its update and go on")
    p.add_argument("--max-skipped", type=_positive_int, default=RUN.training.max_skipped,
                   metavar="N",
                   help="with --on-nan skip: stop after N consecutive skipped steps")
    p.add_argument("--recalibrate-bn", action=argparse.BooleanOptionalAction,
                   default=RUN.training.recalibrate_bn,
                   help="after each epoch, set batch norm's moving averages from the epoch's "
                        "batches (--no-recalibrate-bn: keep them as training left them)")
    _add_strategy_arguments(p, "tf.distribute strategy; multiworker reads the cluster from TF_CONFIG")
    p.set_defaults(func=cmd_train, check=check_train_paths)

    p = sub.add_parser("bench", help="time eager, tf.function, XLA and fit on this machine")
    p.add_argument("--model", action="append", default=None, metavar="NAME|MODULE:FUNCTION|FILE.keras",
                   help="time this model instead of the five workloads (repeatable): a workload "
                        "name, an importable function returning a Keras model, or a .keras file")
    p.add_argument("--input-shape", default=None, metavar="D1,D2,...",
                   help="--model's input shape without the batch axis, if the model has none")
    p.add_argument("--batch-size", type=_positive_int, default=None,
                   help="--model's batch size (default 32)")
    p.add_argument("--loss", default=None,
                   help="--model's training loss (a Keras loss name), if it is not compiled with one")
    p.add_argument("--quick", action="store_true", help="fewer rounds and batch sizes")
    p.add_argument("--smoke", action="store_true",
                   help="two rounds of one step: checks that everything runs, measures nothing")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--plot", default=None, help="write a bar chart PNG here")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--runners", type=_runner_list, default=None, metavar="A,B,...",
                   help="time only these runners (e.g. function,fit_k1,xla_loop_k8)")
    p.add_argument("--compare", nargs="+", default=None, metavar="JSON",
                   help="BASE.json [NEW.json]: the time ratio new / base of every runner in "
                        "both, with an interval and a verdict (without NEW: measure BASE's "
                        "selection again now)")
    p.add_argument("--fail-on-slower", type=_non_negative_float, default=None, metavar="PCT",
                   help="with --compare: exit 1 when a runner is slower by more than PCT %%")
    p.add_argument("--force", action="store_true",
                   help="with --compare: compare runs of different machines or versions")
    _add_strategy_arguments(p, "mirrored: time the loop on 1, 2, ... --devices replicas instead")
    p.set_defaults(func=cmd_bench, check=check_bench_paths)

    add_check_parser(sub)
    add_sweep_parser(sub)

    p = sub.add_parser("idioms", help="the documents' Keras-2 idioms run on Keras 3 and on tf-keras")
    p.add_argument("--json", default=None, help="write the matrix to this JSON file")
    p.set_defaults(func=cmd_idioms, check=check_json_path)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        getattr(args, "check", lambda args: None)(args)  # paths, before TensorFlow starts
    except BadPath as e:
        print(f"spec-impl {args.command}: {e}", file=sys.stderr)
        return 2
    _import_tensorflow(args.verbose)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
