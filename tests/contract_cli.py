"""`spec-impl check` run as a user runs it, for the contract's tests: in a fresh process whose
current folder holds the user's module, its card read back check by check."""

import os
import subprocess
import sys
from pathlib import Path

from spec_impl.contract import FAILED, OK, SKIPPED, WARNING

TESTS = Path(__file__).parent


def run_check(args, cwd):
    """`spec-impl check ARGS` in `cwd`, with `cwd` and `tests/` importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(cwd), str(TESTS)]),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "spec_impl", "check", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def card_statuses(stdout):
    """`{check: status}` from a report card."""
    found = {}
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in (OK, FAILED, SKIPPED, WARNING):
            found[parts[1]] = parts[0]
    return found
