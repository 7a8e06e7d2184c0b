"""The `spec-impl` command line: `summary`, `train` and `bench`."""

import argparse
import os
import sys
import tempfile


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


def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {text!r}")
    return value


def cmd_summary(args):
    from spec_impl.registry import format_summary, summary_rows

    print(format_summary(summary_rows()))
    return 0


def cmd_train(args):
    import os

    from spec_impl.registry import classifier_names, get_model_spec

    valid = classifier_names()
    if args.model not in valid:
        print(f"spec-impl train: unknown model {args.model!r}. Valid models: {', '.join(valid)}",
              file=sys.stderr)
        return 2
    import keras

    from spec_impl.data import class_names, load_dataset
    from spec_impl.engine import train
    from spec_impl.evaluation import evaluate_classifier
    from spec_impl.precision import global_policy
    from spec_impl.saving import save_model_atomic

    spec = get_model_spec(args.model)
    try:
        (x_train, y_train), (x_test, y_test) = load_dataset(args.data, input_shape=spec.input_shape)
    except (ValueError, FileNotFoundError) as e:
        print(f"spec-impl train: {e}", file=sys.stderr)
        return 2
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
    checkpoint_dir = os.path.join(args.out, "checkpoints")
    if not args.resume and os.path.exists(os.path.join(checkpoint_dir, "checkpoint")):
        print(f"spec-impl train: {checkpoint_dir} holds checkpoints of an earlier run. Pass "
              f"--resume to continue it, or choose another --out.", file=sys.stderr)
        return 2
    keras.utils.set_random_seed(args.seed)
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    with global_policy(args.precision):  # the model keeps its policy after the block
        model = spec.build(spec.input_shape, num_classes)
    history = train(
        model, (x_train, y_train),
        loss=spec.training_loss(),
        optimizer=keras.optimizers.Adam(args.learning_rate),
        epochs=args.epochs, validation_data=(x_test, y_test), metrics=["accuracy"],
        mode=args.mode, log_dir=args.log_dir, checkpoint_dir=checkpoint_dir,
        batch_size=args.batch_size, verbose=0 if args.quiet else 1,
        recalibrate_bn=not args.no_recalibrate_bn, steps_per_execution=args.steps_per_execution,
    )
    if not history:
        print(f"Nothing to train: the checkpoints in {checkpoint_dir} already reach "
              f"--epochs {args.epochs}; evaluating the restored model.")
    model_path = save_model_atomic(model, os.path.join(args.out, "model.keras"))
    names = list(class_names(args.data))[:num_classes]
    result = evaluate_classifier(model, x_test, y_test, class_names=names, out_dir=args.out)
    print(result["report"])
    print(f"test accuracy {result['accuracy']:.4f}  ROC AUC (ovr) {result['roc_auc_ovr']:.4f}  "
          f"ROC AUC (document 000) {result['roc_auc_document']:.4f}")
    print(f"model: {model_path}; report and confusion matrix in {args.out}"
          + (f"; TensorBoard: tensorboard --logdir {args.log_dir}" if args.log_dir else ""))
    return 0


def cmd_bench(args):
    import tensorflow as tf

    from spec_impl.bench_suite import format_tables, plot, run_suite, write_json

    if args.device == "gpu" and not tf.config.list_physical_devices("GPU"):
        print("spec-impl bench: --device gpu, but TensorFlow sees no GPU on this machine.",
              file=sys.stderr)
        return 2
    results = run_suite(quick=args.quick, device=args.device,
                        log=lambda m: print(m, file=sys.stderr, flush=True))
    print(format_tables(results))
    if args.json:
        write_json(results, args.json)
        print(f"JSON: {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")
    return 0


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
    p.add_argument("--model", default="mini_inception", help="a classifier name (see `summary`)")
    p.add_argument("--data", default="digits",
                   help="digits (embedded), mnist, fashion_mnist, cifar10 (local Keras cache) or an .npz")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--mode", choices=["eager", "function", "xla"], default="function")
    p.add_argument("--precision", choices=["float32", "mixed_float16", "mixed_bfloat16"],
                   default="float32", help="Keras dtype policy (mixed_float16 scales the loss)")
    p.add_argument("--steps-per-execution", type=_positive_int, default=1, metavar="K",
                   help="batches per compiled call (as fit's steps_per_execution)")
    p.add_argument("--log-dir", default=None, help="TensorBoard folder (train/ and validation/)")
    p.add_argument("--out", default="runs/latest", help="folder for the model, report, plots, checkpoints")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--limit", type=int, default=None, help="use only the first N training samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-recalibrate-bn", action="store_true",
                   help="keep batch norm's moving averages as training left them")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("bench", help="time eager, tf.function, XLA and fit on this machine")
    p.add_argument("--quick", action="store_true", help="fewer rounds and batch sizes")
    p.add_argument("--json", default=None, help="write every figure to this JSON file")
    p.add_argument("--plot", default=None, help="write a bar chart PNG here")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    _import_tensorflow(args.verbose)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
