"""The model table behind `spec-impl summary`: documented counts are met."""

import pytest

from spec_impl.registry import MODELS, get_model_spec, parameter_counts, summary_rows


def test_every_documented_count_is_met():
    rows = summary_rows()
    assert len(rows) == len(MODELS)
    for spec, counts in rows:
        for key, value in spec.documented.items():
            assert counts[key] == value, (spec.name, key, counts[key], value)


def test_summary_lists_every_classifier_the_train_command_accepts():
    expected = {"mini_inception", "inception_model", "sequential_cnn", "functional_cnn",
                "subclassed_cnn", "mnist_mlp"}
    assert expected <= {name for name, spec in MODELS.items() if spec.classifier}


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown model 'resnet'. Expected one of: .*mini_inception"):
        get_model_spec("resnet")


def test_parameter_counts_split():
    spec = get_model_spec("mini_inception")
    counts = parameter_counts(spec.build(spec.input_shape, 10))
    assert counts == {"total": 1_656_250, "trainable": 1_652_826, "non_trainable": 3_424}
