"""`spec-impl check MODULE:FACTORY`: the contract on your component, as a report card."""

import argparse
import json
import sys

from spec_impl.contract.core import KINDS
from spec_impl.contract.facts import TARGETS

COUNT_KEYS = ("trainable_weights", "non_trainable_weights", "params", "seed_generators",
              "losses", "float32_layers")
REPLICAS = 2  # the mirrored check's replicas: logical CPU devices where there are not two GPUs


def _shape(text):
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d <= 0 for d in shape):
        raise argparse.ArgumentTypeError(f"expected positive sizes separated by commas, such as "
                                         f"5 or 8,8,3, received {text!r}")
    return shape


def _expectation(text):
    key, _, value = text.partition("=")
    if key not in COUNT_KEYS or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected KEY=N with KEY among {', '.join(COUNT_KEYS)}, "
                                         f"received {text!r}")
    return key, int(value)


def add_parser(sub):
    """Add the `check` command to the `spec-impl` sub-parsers."""
    p = sub.add_parser("check", help="run the specification's contract on your own layer, model, "
                                     "loss or metric")
    p.add_argument("target", metavar="MODULE:FACTORY",
                   help="an importable function or class (called without arguments) that makes "
                        "the component, such as my_layers:make_scale")
    p.add_argument("--input-shape", type=_shape, action="append", default=None, metavar="D1,D2,...",
                   help="an input's shape without the batch axis (repeat for several inputs); for a "
                        "loss or metric, the shape of y_true and y_pred. A model with inputs needs none")
    p.add_argument("--input-dtype", action="append", default=None, metavar="DTYPE",
                   help="float32 (default), an integer dtype (values in [0, 10)) or string (words); "
                        "one, or one per --input-shape")
    p.add_argument("--target", dest="targets", choices=sorted(TARGETS), default=None,
                   help="for a loss or metric, the targets it expects (by default, what its name "
                        "declares: sparse, categorical, binary, else probability)")
    p.add_argument("--kind", choices=KINDS, default=None,
                   help="what the factory makes (by default, found from the object)")
    p.add_argument("--expect", type=_expectation, action="append", default=[], metavar="KEY=N",
                   help=f"an expected count ({', '.join(COUNT_KEYS)}); repeatable")
    p.add_argument("--skip", action="append", default=[], metavar="CHECK",
                   help="report this check as skipped (repeatable); the checks after it still run")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run, check=_check_paths)


def _check_paths(args):
    from spec_impl._paths import output_file

    if args.target.count(":") != 1 or not all(args.target.split(":")):
        from spec_impl._paths import BadPath

        raise BadPath(f"expected MODULE:FACTORY (for example my_layers:make_scale), "
                      f"received {args.target!r}")
    if args.json:
        output_file("--json", args.json)


def _inputs(args, make, kind):
    """`(inputs, targets)`: the component's inputs from --input-shape, or from a model's own
    inputs; for a loss or metric, the kind of targets they were made for."""
    import numpy as np

    from spec_impl.contract.component import generate, loss_inputs, model_inputs

    shapes, dtypes = args.input_shape, args.input_dtype
    if shapes is None:
        if kind not in (None, "model"):
            raise ValueError("--input-shape is needed: the component has no inputs of its own")
        shapes, found = model_inputs(make())
        dtypes = dtypes or found
    for dtype in dtypes or ():
        try:
            kind_code = "U" if dtype in ("string", "str") else np.dtype(dtype).kind
        except TypeError:
            kind_code = None
        if kind_code not in ("f", "i", "u", "U"):
            raise ValueError(f"--input-dtype {dtype!r}: expected a float or integer dtype, or string")
    if kind in ("loss", "metric"):
        if len(shapes) != 1:
            raise ValueError("a loss or metric takes one --input-shape (that of y_pred; y_true's "
                             "follows from --target)")
        return loss_inputs(make(), shapes[0], args.targets)
    if args.targets:
        raise ValueError(f"--target is for a loss or metric, not a {kind or 'component'}")
    return generate(shapes, dtypes), None


def run(args):
    """Run the contract on `args.target`; exit 0 when every check passes, 1 when one fails (or
    when every check but `construct` was skipped), 2 for a target or inputs that cannot be used
    (inputs that do not fit the component's `call` included)."""
    import tensorflow as tf

    from spec_impl.contract import check_component, format_report
    from spec_impl.contract.component import kind_of, load_target
    from spec_impl.trainer.distribute import cpu_devices

    if len(tf.config.list_physical_devices("GPU")) < REPLICAS:
        cpu_devices(REPLICAS)  # before anything else runs on a device
    try:
        make = load_target(args.target)
        kind = args.kind
        if kind is None:
            try:
                kind = kind_of(make())
            except Exception:
                kind = None
        inputs, targets = _inputs(args, make, kind)
    except ValueError as error:
        print(f"spec-impl check: {error}", file=sys.stderr)
        return 2
    try:
        report = check_component(make, inputs, kind=kind, expect=dict(args.expect),
                                 target=args.target, skip=tuple(args.skip), targets=targets)
    except ValueError as error:  # a --skip that names no check, inputs that do not fit `call`
        print(f"spec-impl check: {error}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json:
        from spec_impl.saving import write_atomic_text

        write_atomic_text(args.json, json.dumps({
            "component": report.component, "kind": report.kind, "ok": report.ok,
            "seconds": report.seconds(), "results": [r.__dict__ for r in report.results]},
            indent=2) + "\n")
    return 0 if report.ok else 1
