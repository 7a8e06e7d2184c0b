"""Runs the distributed specification, `tests/distributed`, in its own pytest process with the
CPU split into `TEST_DEVICES` logical devices (see the root conftest), and fails with its report
if any of it fails or is skipped."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

TEST_DEVICES = 4  # logical CPU devices, standing in for GPUs
FOLDER = Path(__file__).with_name("distributed")


@pytest.mark.slow
def test_distributed_specification():
    env = dict(os.environ, SPEC_IMPL_CPU_DEVICES=str(TEST_DEVICES))
    proc = subprocess.run([sys.executable, "-m", "pytest", str(FOLDER), "-q", "-rs",
                           "-p", "no:cacheprovider"], capture_output=True, text=True, env=env,
                          timeout=1800, cwd=FOLDER.parent.parent)
    report = proc.stdout[-6000:]
    assert proc.returncode == 0, report
    summary = report.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary and "deselected" not in summary, report
