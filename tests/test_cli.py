"""The `spec-impl` command line."""

import subprocess
import sys

from spec_impl.cli import main


def test_summary_has_a_row_per_model_each_agreeing_with_its_document(capsys):
    from spec_impl.registry import MODELS

    assert main(["summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["model", "input"]
    rows = {line.split()[0]: line for line in lines[2:]}
    assert list(rows) == list(MODELS)
    for name, spec in MODELS.items():
        verdict = "OK " if spec.documented else "not printed by the documents"
        assert verdict in rows[name] and "DIFF" not in rows[name], rows[name]
    # The documented MiniInception counts, as printed (document 000's summary).
    assert "1,656,250  1,652,826      3,424  OK total=1,656,250" in rows["mini_inception"]


def test_a_normal_run_prints_only_its_own_output():
    # TensorFlow's C++ start-up lines are kept off stderr; --verbose lets them through.
    proc = subprocess.run([sys.executable, "-m", "spec_impl", "summary"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("model ")


def test_help_does_not_import_tensorflow():
    code = ("import sys, spec_impl.cli as cli; cli.build_parser().format_help(); "
            "print('tensorflow' in sys.modules, 'MiniInception' in dir(__import__('spec_impl')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.split() == ["False", "True"], proc.stderr[-2000:]


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
