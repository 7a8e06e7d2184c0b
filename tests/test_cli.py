"""The `spec-impl` command line."""

import subprocess
import sys

from spec_impl.cli import main


def test_summary_exits_zero_and_prints_header(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:2] == ["model", "input"]


def test_python_dash_m_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "spec_impl", "--help"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0
    assert "summary" in proc.stdout


def test_unknown_command_exits_non_zero():
    proc = subprocess.run(
        [sys.executable, "-m", "spec_impl", "frobnicate"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "invalid choice: 'frobnicate'" in proc.stderr
