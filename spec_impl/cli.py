"""The `spec-impl` command line: `summary` (and, as they land, `train` and `bench`)."""

import argparse
import os
import sys


def _quiet_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cmd_summary(args):
    from spec_impl.registry import format_summary, summary_rows

    print(format_summary(summary_rows()))
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="spec-impl",
        description="Executable specification and benchmarks for custom modeling in TF 2 / Keras 3.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("summary", help="parameter counts of every model beside the documented ones")
    p.set_defaults(func=cmd_summary)
    return parser


def main(argv=None):
    _quiet_tensorflow()
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
