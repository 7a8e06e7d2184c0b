"""The documents' Keras-2 idioms on Keras 3 (this process) and on tf-keras (a child process with
`TF_USE_LEGACY_KERAS=1`): every cell of `spec-impl idioms` pinned, type and key words."""

import os

import pytest

from spec_impl.idioms import IDIOMS, describe, format_matrix, run_idiom, run_legacy
from spec_impl.testing import conv_keeps_input_channels_on_an_empty_batch

# name -> (Keras 3, tf-keras): ("raises", exception type, words of its first line) or
# ("returns", the result). The empty-batch build call depends on the CPU (see below).
EXPECTED = {
    "save_format_tf": (("raises", "ValueError", "`save_format` argument is deprecated in Keras 3"),
                       ("returns", ["assets", "fingerprint.pb"])),
    "save_to_folder": (("raises", "ValueError", "Invalid filepath extension for saving"),
                       ("returns", True)),
    "save_weights_h5": (("raises", "ValueError", "The filename must end in `.weights.h5`"),
                        ("returns", True)),
    "load_weights_unbuilt_subclassed": (
        ("raises", "ValueError", "loading weights into a model that has not yet been built"),
        ("raises", "ValueError", "expected 0 variables, but received 2 variables during loading")),
    "metric_reset_states": (("raises", "AttributeError", "'Mean' object has no attribute 'reset_states'"),
                            ("returns", 0.0)),
    "input_layer_int_shape": (("raises", "ValueError", "Cannot convert '5' to a shape"),
                              ("returns", [None, 5])),
    "l2_keyword_l": (("raises", "TypeError", "unexpected keyword argument 'l'"), ("returns", 0.05)),
    "add_metric": (("raises", "NotImplementedError", "Could not automatically infer the output shape"),
                   ("returns", ["mean"])),
    "input_shape_then_build": (("raises", "ValueError", "has already been configured to use input shape"),
                               ("returns", [10, 2])),
    "h5_unregistered_loss": (("raises", "TypeError", "string indices must be integers"),
                             ("raises", "ValueError", "Unknown loss function: 'my_loss'")),
    "lambda_in_saved_file": (
        ("raises", "ValueError", "deserialization of a `Lambda` layer whose `function` is a Python lambda"),
        ("raises", "ValueError", "deserialization of a Lambda layer with a Python `lambda` inside it")),
    "sublayers_in_list_checkpoint": (("returns", 0), ("returns", 2)),
    # Treated as probabilities, logits are clipped: a loss of 0 instead of 0.2413, on both.
    "categorical_crossentropy_on_logits": (("returns", [0.0, 0.2413]), ("returns", [0.0, 0.2413])),
}
# Document 000 creates MiniInception's weights with a call on a batch of 0. Where TensorFlow's
# CPU Conv2D keeps an empty batch's shape (tests/test_bad_input.py), both Kerases refuse it at
# the bias; elsewhere both build the model.
ZERO_BATCH_REFUSED = (("raises", "InvalidArgumentError", "Incompatible shapes: [0,32,32,3] vs. [1,1,1,8]"),
                      ("raises", "InvalidArgumentError",
                       "Must provide as many biases as the last dimension of the input tensor"))
ZERO_BATCH_BUILT = (("returns", [[0, 10], 4]), ("returns", [[0, 10], 4]))


# name -> (Keras 3, tf-keras): the one warning an idiom raises, by its first words; every other
# cell raises none (Keras 3's HDF5 "legacy" note goes to the log, tf-keras's is a warning).
WARNINGS = {
    "input_shape_then_build": ("UserWarning: Do not pass an `input_shape`/`input_dim` argument", None),
    "h5_unregistered_loss": (None, "UserWarning: You are saving your model as an HDF5 file"),
}


def expected(name, side):
    if name == "zero_batch_build_call":
        cells = ZERO_BATCH_REFUSED if conv_keeps_input_channels_on_an_empty_batch() else ZERO_BATCH_BUILT
        return cells[side]
    return EXPECTED[name][side]


def check(outcome, want, name, side):
    warns = WARNINGS.get(name, (None, None))[side]
    assert len(outcome["warnings"]) == (warns is not None), outcome["warnings"]
    assert warns is None or outcome["warnings"][0].startswith(warns), outcome["warnings"]
    if want[0] == "raises":
        kind, words = want[1], want[2]
        assert outcome["raised"] is not None, f"returned {outcome['result']!r}"
        assert outcome["raised"].startswith(f"{kind}: ") and words in outcome["raised"], outcome["raised"]
    else:
        assert outcome["raised"] is None, outcome["raised"]
        assert outcome["result"] == (pytest.approx(want[1]) if isinstance(want[1], float)
                                     else want[1])


def test_every_idiom_is_pinned():
    assert {*EXPECTED, "zero_batch_build_call"} == {i.name for i in IDIOMS}
    assert set(WARNINGS) <= {i.name for i in IDIOMS}


@pytest.mark.parametrize("idiom", IDIOMS, ids=lambda i: i.name)
def test_on_keras_3(idiom):
    check(run_idiom(idiom), expected(idiom.name, 0), idiom.name, 0)


@pytest.fixture(scope="module")
def legacy(tf_keras):
    return run_legacy()


def test_on_tf_keras(legacy):
    assert legacy["versions"]["keras"].startswith("2.")
    for idiom in IDIOMS:
        check(legacy["outcomes"][idiom.name], expected(idiom.name, 1), idiom.name, 1)


def test_the_matrix_text(legacy):
    rows = [{"idiom": i.name, "document": i.document, "keras3": run_idiom(i),
             "tf_keras": legacy["outcomes"][i.name], "instead": i.instead} for i in IDIOMS[:2]]
    text = format_matrix({"versions": {"tensorflow": "2.x", "keras": "3.x", "tf_keras": "2.y"},
                          "rows": rows})
    assert text.splitlines()[0] == "TensorFlow 2.x, Keras 3.x, tf-keras 2.y"
    assert "| `save_format_tf` | 000 | raises ValueError: The `save_format` argument is deprecated" in text
    assert '| returns ["assets", "fingerprint.pb"] | model.save("net.keras")' in text
    assert describe(None) == 'not installed: pip install -e ".[legacy]"  (tf-keras)'


def test_without_tf_keras_the_command_says_how_to_install_it(tmp_path):
    import json
    import subprocess
    import sys

    # A sitecustomize that hides tf_keras from the child, as if it were not installed.
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n_find = u.find_spec\n"
        "u.find_spec = lambda name, *a: None if name == 'tf_keras' else _find(name, *a)\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "spec_impl", "idioms", "--json",
                           str(tmp_path / "m.json")], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tf-keras not installed" in proc.stdout
    assert 'not installed: pip install -e ".[legacy]"' in proc.stdout
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["versions"]["tf_keras"] is None and len(saved["rows"]) == len(IDIOMS)
