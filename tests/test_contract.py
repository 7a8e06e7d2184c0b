"""The contract for users' components (`spec_impl.contract`): it passes Keras's own built-ins,
fails each broken component of `contract_catalogue` at exactly its own check, and runs the same
way as `spec-impl check` and as the pytest plugin."""

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from contract_catalogue import CATALOGUE, MIRRORED, WARNINGS
from contract_cli import card_statuses, run_check

from spec_impl.contract import FAILED, OK, SKIPPED, check_component, check_names, format_report

TESTS = Path(__file__).parent


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_each_broken_component_fails_its_own_check_and_no_other(name):
    make, inputs, check, phrase, expect = CATALOGUE[name]
    report = check_component(make, inputs, expect=expect)
    card = format_report(report)
    if check in WARNINGS:
        assert report.failed == [] and report.ok, card
        assert [r.check for r in report.warnings] == [check], card
    else:
        assert [r.check for r in report.failed] == [check], card
    assert phrase in report[check].cause, card
    assert report[check].fix, card


def test_a_report_names_every_check_in_order_and_skips_what_needs_a_failed_one():
    make, inputs, _, _, _ = CATALOGUE["output shape disagrees"]
    report = check_component(make, inputs, only=None)
    assert [r.check for r in report.results] == check_names("layer")
    assert report["keras_reload"].status == SKIPPED
    assert report["keras_reload"].detail == "needs config_round_trip, which did not pass"
    assert report["symbolic_call"].status == OK
    assert not report.ok
    with pytest.raises(KeyError, match="no check named 'nope'"):
        report["nope"]


def test_a_factory_that_needs_arguments_fails_construct_alone():
    report = check_component(lambda units: None, [[0.0]])
    assert [(r.check, r.status) for r in report.results] == [("construct", FAILED)]
    assert "missing 1 required positional argument: 'units'" in report["construct"].cause


def test_a_check_name_that_does_not_exist_is_refused():
    make, inputs, _, _, _ = CATALOGUE["weights made in call"]
    with pytest.raises(ValueError, match=r"Expected check names among construct, .*Received: 'nope'"):
        check_component(make, inputs, skip=("nope",))


USER_MODULE = '''
import keras

@keras.saving.register_keras_serializable(package="user_layers")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def build(self, input_shape):
        self.bias = self.add_weight(shape=input_shape[-1:], initializer="zeros")

    def call(self, x):
        return x * self.factor + self.bias

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def make_scale(**kwargs):
    return Scale(3.0, **kwargs)


def dense():
    return keras.layers.Dense(3)


def conv2d():
    return keras.layers.Conv2D(2, 3)


def layer_normalization():
    return keras.layers.LayerNormalization()


def batch_normalization():
    return keras.layers.BatchNormalization()


def dropout():
    return keras.layers.Dropout(0.5)


def embedding():
    return keras.layers.Embedding(10, 4, mask_zero=True)


def multi_head_attention():
    return keras.layers.MultiHeadAttention(2, 4)


def mean_squared_error(**kwargs):
    return keras.losses.MeanSquaredError(**kwargs)


def auc():
    return keras.metrics.AUC()
'''


@pytest.mark.slow
def test_check_command_passes_a_user_layer_with_two_replicas_and_writes_json(tmp_path):
    (tmp_path / "user_layers.py").write_text(USER_MODULE)
    done = run_check(["user_layers:make_scale", "--input-shape", "5", "--expect",
                     "trainable_weights=1", "--json", "card.json"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = card_statuses(done.stdout)
    assert statuses["mirrored"] == OK and statuses["fresh_process_reload"] == OK, done.stdout
    assert set(statuses.values()) <= {OK, SKIPPED}
    card = json.loads((tmp_path / "card.json").read_text())
    assert card["ok"] is True and card["component"] == "user_layers:make_scale"
    assert [r["check"] for r in card["results"]] == check_names("layer")


@pytest.mark.slow
def test_check_command_fails_the_batch_dependent_layer_on_two_replicas_only(tmp_path):
    make, check, phrase = MIRRORED
    done = run_check([f"contract_catalogue:{make.__name__}", "--input-shape", "5"], tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    statuses = card_statuses(done.stdout)
    assert [c for c, s in statuses.items() if s == FAILED] == [check], done.stdout
    assert phrase in done.stdout and "fix: " in done.stdout


@pytest.mark.parametrize("args, message", [
    (["no_colon"], "expected MODULE:FACTORY (for example my_layers:make_scale), received 'no_colon'"),
    (["missing_module:make"], "cannot import 'missing_module' (from 'missing_module:make'): "
                              "ModuleNotFoundError"),
    (["user_layers:nothing"], "'user_layers' has no attribute 'nothing'"),
    (["user_layers:dense"], "--input-shape is needed: the component has no inputs of its own"),
    (["user_layers:dense", "--input-shape", "5", "--skip", "nope"], "Received: 'nope'"),
    (["user_layers:dense", "--input-shape", "5", "--input-dtype", "complex64"],
     "--input-dtype 'complex64': expected a float or integer dtype, or string"),
])
def test_check_command_refuses_bad_input_with_exit_2(tmp_path, args, message):
    (tmp_path / "user_layers.py").write_text(USER_MODULE)
    done = run_check(args, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr


PLUGIN_TESTS = '''
import pytest

BUILT_INS = [("dense", (5,), None), ("conv2d", (6, 6, 3), None), ("dropout", (5,), None),
             ("embedding", (6,), "int32"), ("multi_head_attention", [(3, 5), (4, 5)], None),
             ("mean_squared_error", (3,), None), ("auc", (1,), None)]


def _loss_inputs(shape):
    import numpy as np
    rng = np.random.default_rng(0)
    return [rng.integers(0, 2, (4, *shape)).astype("float32"), rng.random((4, *shape), "float32")]


for name, shape, dtype in BUILT_INS:
    if name in ("mean_squared_error", "auc"):
        mark = pytest.mark.keras_contract(f"user_layers:{name}", _loss_inputs(shape))
    else:
        mark = pytest.mark.keras_contract(f"user_layers:{name}", input_shape=shape, input_dtype=dtype)

    @mark
    def test_built_in(keras_contract):
        assert keras_contract.check

    globals()[f"test_{name}"] = test_built_in
    del test_built_in


@pytest.mark.keras_contract("contract_catalogue:forgetful_scale", input_shape=(5,))
def test_broken(keras_contract):
    pass
'''


@pytest.mark.slow
def test_plugin_runs_one_test_per_check_and_keras_built_ins_pass(tmp_path):
    (tmp_path / "user_layers.py").write_text(USER_MODULE)
    (tmp_path / "test_user_layers.py").write_text(textwrap.dedent(PLUGIN_TESTS))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(TESTS)])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider", "-q",
         "--spec-impl-cpu-devices=2", "--junitxml=out.xml", "-o", "addopts=", "-W", "error",
         "test_user_layers.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    cases = {}
    for case in ET.parse(tmp_path / "out.xml").getroot().iter("testcase"):
        outcome = ("failed" if case.find("failure") is not None or case.find("error") is not None
                   else "skipped" if case.find("skipped") is not None else "passed")
        cases[case.get("name")] = (outcome, "".join(
            (c.get("message") or "") for c in case if c.tag in ("failure", "skipped")))
    failed = sorted(name for name, (outcome, _) in cases.items() if outcome == "failed")
    assert failed == ["test_broken[config_round_trip]"], done.stdout[-3000:]
    assert "fix: add `offset` to `get_config`" in cases["test_broken[config_round_trip]"][1]
    # one of each kind the plugin passes differently (every public Keras class: the sweep)
    for name in ("dense", "conv2d", "dropout", "embedding", "multi_head_attention"):
        assert cases[f"test_{name}[mirrored]"][0] == "passed", cases[f"test_{name}[mirrored]"]
        assert cases[f"test_{name}[fresh_process_reload]"][0] == "passed"
        assert len([c for c in cases if c.startswith(f"test_{name}[")]) == len(check_names("layer"))
    assert cases["test_embedding[masking]"][0] == "passed"
    assert cases["test_conv2d[masking]"] == ("skipped", "masking: the layer neither supports masking "
                                                        "nor makes a mask")
    assert len([c for c in cases if c.startswith("test_auc[")]) == len(check_names("metric"))
    assert all(cases[f"test_auc[{c}]"][0] == "passed" for c in check_names("metric"))
    assert all(cases[f"test_mean_squared_error[{c}]"][0] == "passed" for c in check_names("loss"))
