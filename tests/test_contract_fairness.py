"""The contract is fair: each way it used to fail correct components (Keras's own, the keras-io
guides', other public Keras libraries', Functional models) now passes, for the reason Keras
declares; and the real faults those false alarms hid are still found."""

import re
from pathlib import Path

import keras
import pytest
from contract_cli import card_statuses, run_check
from contract_public import MLPBlock, Sampling, StatefulSampling, TypedSampling

from spec_impl.contract import (
    FAILED,
    OK,
    SKIPPED,
    WARNING,
    check_component,
    format_report,
    generate,
    generate_targets,
)
from spec_impl.contract.package_components import attention_block, get_uncompiled_model

TESTS = Path(__file__).parent
L = keras.layers
SEQUENCES = generate([(6, 5)])


def _passes(make, inputs, **options):
    report = check_component(make, inputs, **options)
    assert report.ok and not report.failed, format_report(report)
    return report


@pytest.mark.parametrize("make", [lambda: L.GRU(4), lambda: L.Bidirectional(L.LSTM(3)),
                                  L.GlobalAveragePooling1D],
                         ids=["GRU", "Bidirectional(LSTM)", "GlobalAveragePooling1D"])
def test_a_layer_that_consumes_the_time_axis_returns_no_mask_by_design(make):
    report = _passes(make, SEQUENCES, only=("construct", "eager_call", "masking"))
    assert report["masking"].status == OK
    assert report["masking"].detail.startswith("mask (4, 6) consumed"), report["masking"].detail


def test_a_merge_layer_gets_every_input_masked_and_hands_the_mask_on():
    report = _passes(L.Add, generate([(6, 5), (6, 5)]), only=("construct", "eager_call", "masking"))
    assert report["masking"].detail == "mask (4, 6) handed on"


def test_a_layer_whose_own_compute_mask_drops_a_kept_axis_still_fails():
    from contract_catalogue import MaskDropping

    report = check_component(MaskDropping, SEQUENCES, only=("construct", "eager_call", "masking"))
    assert report["masking"].status == FAILED
    assert "keeps the masked axes, but carries no mask" in report["masking"].cause


@pytest.mark.parametrize("make, inputs, found", [
    (L.Attention, generate([(3, 4), (2, 4)]), "`build` sets"),
    (L.Add, generate([(5,), (5,)]), "`build` sets"),
    (lambda: L.Normalization(mean=0.0, variance=1.0), generate([(5,)]), "`build` sets"),
    (lambda: L.Dot(axes=1), generate([(5,), (5,)]), "`build` checks its input shapes"),
], ids=["Attention", "Add", "Normalization", "Dot"])
def test_a_build_that_makes_no_state_here_but_does_something_is_not_flagged(make, inputs, found):
    report = _passes(make, inputs, only=("construct", "built_at_construction"))
    assert report["built_at_construction"].status == OK
    assert report["built_at_construction"].detail.startswith(found)


def test_gradients_are_taken_with_respect_to_tensors_so_keras_ops_that_refuse_variables_work():
    report = _passes(L.Attention, generate([(3, 4), (2, 4)]))
    assert report["finite_differences"].detail == "12 coordinates"


def test_a_component_that_rounds_to_float32_inside_is_compared_at_float32_steps():
    from contract_public import FourierMixing

    report = _passes(FourierMixing, generate([(4, 4)]))
    detail = report["finite_differences"].detail
    assert "rounds to float32 inside (ops" in detail and "FFT2D" in detail, detail


def test_a_functional_model_is_made_in_float64_with_float64_inputs():
    report = _passes(get_uncompiled_model, generate([(784,)]))
    assert report["finite_differences"].detail == "12 coordinates"  # all float64: no rounding
    assert report["dtype_policy"].detail.startswith("float64, mixed_float16, mixed_bfloat16")


@pytest.mark.parametrize("make, inputs", [
    (lambda: L.TimeDistributed(L.Dense(3)), SEQUENCES),
    (lambda: L.SpectralNormalization(L.Dense(3)), generate([(5,)])),
    (get_uncompiled_model, generate([(784,)])),
    (attention_block, generate([(6, 8)])),
], ids=["TimeDistributed", "SpectralNormalization", "training guide's model", "attention block"])
def test_from_config_that_consumes_its_dict_round_trips(make, inputs):
    report = _passes(make, inputs, only=("construct", "eager_call", "config_round_trip"))
    assert report["config_round_trip"].status == OK


def test_a_layer_that_declares_supports_jit_false_is_not_compiled_by_xla():
    report = _passes(lambda: L.IntegerLookup(vocabulary=[1, 2, 3]), generate([(3,)], ["int64"]))
    assert report["eager_function_xla"].detail.endswith(
        "XLA left out: IntegerLookup declares `supports_jit = False`")
    assert report["dtype_policy"].status == SKIPPED
    assert "computes in int64 under the default policy" in report["dtype_policy"].detail


def test_a_seeded_stochastic_layer_is_compared_with_its_seeds_reset():
    inputs = generate([(3,), (3,)])
    guide = check_component(Sampling, inputs)
    card = format_report(guide)
    for name in ("config_round_trip", "eager_function_xla", "keras_reload", "trace_bound"):
        assert guide[name].status == OK, (name, card)
    assert "XLA draws its own numbers from the same seeds" in guide["eager_function_xla"].detail
    # The guide's layer draws float32 noise whatever the policy: a real fault, still found.
    assert [r.check for r in guide.failed] == ["dtype_policy"], card
    assert "expected to be a double tensor but is a float tensor" in guide["dtype_policy"].cause
    report = _passes(TypedSampling, inputs)
    assert report["finite_differences"].status == OK  # the same draws at every evaluation
    assert report["fresh_process_reload"].detail.startswith("the layer draws random numbers")


def test_a_layer_drawing_from_stateful_ops_is_compared_by_shape_and_says_so():
    report = _passes(StatefulSampling, generate([(3,), (3,)]))
    assert "values compared by shape" in report["eager_function_xla"].detail
    assert report["finite_differences"].status == SKIPPED


@pytest.mark.parametrize("make, shape, targets", [
    (lambda **kw: keras.losses.CategoricalCrossentropy(from_logits=True, **kw), (4,), "categorical"),
    (lambda **kw: keras.losses.SparseCategoricalCrossentropy(**kw), (4,), "sparse"),
    (lambda **kw: keras.losses.BinaryCrossentropy(**kw), (3,), "binary"),
], ids=["categorical from logits", "sparse integer labels", "binary"])
def test_a_loss_gets_targets_valid_for_its_kind(make, shape, targets):
    from spec_impl.contract.facts import target_kind

    assert target_kind(make()) == targets  # read from the loss's own name
    report = _passes(make, list(generate_targets(shape, targets)), targets=targets)
    assert report["finite_differences"].status == OK
    assert report["call"].detail.endswith(f"on {targets} targets")


def test_the_subclassing_guides_block_warns_of_its_missing_build_and_its_real_faults_still_show():
    report = check_component(MLPBlock, generate([(5,)]))
    card = format_report(report)
    assert report["state_in_build"].status == WARNING, card
    # What the warning used to hide: no `**kwargs`, so its config cannot rebuild it. (Made
    # under the global policy, as its constructor takes no dtype, its sub-layers follow it.)
    assert [r.check for r in report.failed] == ["config_round_trip"], card
    assert "TypeError: Error when deserializing class 'MLPBlock'" in report["config_round_trip"].cause
    assert report["dtype_policy"].status == OK, card
    for name in ("symbolic_call", "eager_call", "training_step", "trace_bound"):
        assert report[name].status == OK, (name, card)


def test_a_wrong_derivative_names_only_what_the_component_holds():
    from contract_catalogue import UnusedWeight, WrongGradient

    report = check_component(WrongGradient, generate([(5,)]), only=("construct", "finite_differences"))
    assert "the derivative is wrong" in report["finite_differences"].cause
    assert "`tf.custom_gradient`" in report["finite_differences"].fix
    plain = check_component(UnusedWeight, generate([(5,)]), only=("construct", "finite_differences"))
    assert plain["finite_differences"].status == OK  # an unused weight's zero gradient is right


def test_a_policy_fault_of_a_wrapper_gets_a_wrappers_fix():
    report = check_component(lambda **kw: L.TimeDistributed(L.Dense(3), **kw), SEQUENCES,
                             only=("construct", "eager_call", "output_dtype", "dtype_policy"))
    assert report["dtype_policy"].status == FAILED
    assert report["dtype_policy"].fix.startswith("make the wrapped layer with the wrapper's policy")
    assert "wraps a layer" in report["construct"].detail


# The command.

USER_MODULE = '''
import keras
from contract_public import FeatureCross


def feature_cross():
    return FeatureCross()


def dense():
    return keras.layers.Dense(3)


def string_lookup():
    return keras.layers.StringLookup(vocabulary=["the", "cat", "sat"])


def discretization():
    return keras.layers.Discretization(bin_boundaries=[-0.5, 0.0, 0.5])


def sparse_loss():
    return keras.losses.SparseCategoricalCrossentropy()


def attention():
    return keras.layers.MultiHeadAttention(2, 4)
'''


@pytest.fixture
def user_module(tmp_path):
    (tmp_path / "user_layers.py").write_text(USER_MODULE)
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("args, expect", [
    (["user_layers:feature_cross", "--input-shape", "5", "--input-shape", "5"], {"mirrored": OK}),
    (["user_layers:string_lookup", "--input-shape", "3", "--input-dtype", "string"],
     {"eager_function_xla": OK, "fresh_process_reload": OK}),
    (["user_layers:discretization", "--input-shape", "5"], {"output_dtype": OK}),
    (["user_layers:sparse_loss", "--input-shape", "4"], {"finite_differences": OK}),
], ids=["optional second argument", "strings", "integer output", "integer labels"])
def test_check_command_takes_every_input_a_layer_takes(user_module, args, expect):
    done = run_check(args, user_module)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = card_statuses(done.stdout)
    assert FAILED not in statuses.values(), done.stdout
    for name, status in expect.items():
        assert statuses[name] == status, done.stdout
    assert " s" in done.stdout.splitlines()[-1] and " in " in done.stdout.splitlines()[-1]
    if "discretization" in args[0]:
        assert re.search(r"ok +output_dtype +int32\n", done.stdout), done.stdout


@pytest.mark.slow
def test_skipping_a_check_others_read_turns_nothing_else_off(user_module):
    done = run_check(["user_layers:dense", "--input-shape", "5", "--skip", "state_in_build"],
                    user_module)
    assert done.returncode == 0, done.stdout + done.stderr
    statuses = card_statuses(done.stdout)
    assert statuses["state_in_build"] == SKIPPED
    assert statuses["symbolic_call"] == OK and statuses["finite_differences"] == OK
    assert "left out on request (the checks after it still run)" in done.stdout


def test_a_card_that_checked_nothing_is_not_a_pass(user_module):
    from spec_impl.contract import check_names

    skips = [a for name in check_names("layer")[1:] for a in ("--skip", name)]
    done = run_check(["user_layers:dense", "--input-shape", "5", *skips], user_module)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "nothing was checked: every check but `construct` was skipped" in done.stdout


@pytest.mark.parametrize("args, message", [
    (["user_layers:attention", "--input-shape", "3,5"],
     "MultiHeadAttention.call(query, value, key, query_mask, value_mask, key_mask, "
     "attention_mask) needs 2 inputs (query, value); received one"),
    (["user_layers:feature_cross", "--input-shape", "5", "--input-shape", "5", "--input-shape", "5"],
     "FeatureCross.call(x0, x) takes 1 to 2 inputs; received 3"),
    (["user_layers:dense", "--input-shape", "5", "--target", "sparse"],
     "--target is for a loss or metric, not a layer"),
    (["user_layers:sparse_loss", "--input-shape", "1"],
     "sparse targets need at least 2 classes on the last axis; received the shape (1,)"),
], ids=["too few inputs", "too many inputs", "target of a layer", "one class"])
def test_inputs_the_command_cannot_give_are_refused_with_exit_2(user_module, args, message):
    done = run_check(args, user_module)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stdout == ""
