"""The contract's sweep of Keras itself (`spec-impl sweep`): every public class of `keras.layers`,
`keras.losses` and `keras.metrics`, the Keras guides' Functional, Sequential and subclassed
models, and this package's own components, each fail nothing but the listed upstream defects;
each listed defect is reproduced here in plain Keras, without the contract."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl.contract import FAILED, OK, SKIPPED
from spec_impl.contract.keras_components import COMPONENTS, NOT_SWEPT, UPSTREAM_DEFECTS
from spec_impl.contract.sweep import catalogue, coverage, public_classes

ROOT = Path(__file__).parent.parent
PARTS = 2  # the sweep runs in two processes, which pytest-xdist can run side by side
RNG = np.random.default_rng(0)


def test_the_catalogue_covers_every_public_class_of_keras():
    covered, left_out, missing = coverage()
    assert missing == [], f"public Keras classes the sweep does not know: {missing}"
    assert sorted(left_out) == sorted(NOT_SWEPT), "a class left out that this Keras no longer has"
    assert all(reason for reason in NOT_SWEPT.values())
    # About 130 layers after aliases, every loss and metric class.
    assert len([c for c in covered if c.startswith("layers.")]) >= 125
    assert {c for c in public_classes() if c.startswith(("losses.", "metrics."))} - set(NOT_SWEPT) \
        <= set(covered)


def test_every_listed_defect_names_an_entry_and_a_check_of_its_kind():
    from spec_impl.contract import check_names

    for name, checks in UPSTREAM_DEFECTS.items():
        entry = COMPONENTS[name]
        assert set(checks) <= set(check_names(entry.kind)), name
        assert all(checks.values()), name


def _sweep(part, tmp_path):
    out = tmp_path / "sweep.json"
    done = subprocess.run([sys.executable, "-m", "spec_impl", "sweep", "--part", f"{part}/{PARTS}",
                           "--json", str(out)], capture_output=True, text=True, timeout=1500,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    return done, json.loads(out.read_text()) if out.exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("part", range(1, PARTS + 1))
def test_the_sweep_fails_only_the_listed_upstream_defects(part, tmp_path):
    done, cards = _sweep(part, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    names = [e.name for name in ("keras", "package") for e in catalogue(name)][part - 1::PARTS]
    assert [c["entry"] for c in cards] == names
    for card in cards:
        status = {r["check"]: r["status"] for r in card["results"]}
        failed = sorted(c for c, s in status.items() if s == FAILED)
        assert failed == sorted(UPSTREAM_DEFECTS.get(card["entry"], {})), card
        # Not a vacuous card: a component without defects passes at least five checks.
        assert sum(s == OK for c, s in status.items() if c != "construct") >= (1 if failed else 5), card
        if card["kind"] in ("layer", "model") and "eager_call" not in failed:
            assert status["mirrored"] == OK, card  # two logical CPU devices in the sweep's process
        if status.get("fresh_process_reload") == SKIPPED:
            reason = next(r["detail"] for r in card["results"] if r["check"] == "fresh_process_reload")
            assert reason.startswith(("needs", "the layer draws random numbers")), card
    assert re.search(r"\d+ components: \d+ passed every check", done.stdout)


# Each listed upstream defect, reproduced in plain Keras.

def test_upstream_softmax_takes_a_sequence_mask_as_its_own_and_raises():
    ids = np.array([[1, 2, 0]])
    embedded = keras.layers.Embedding(10, 4, mask_zero=True)(ids)  # (1, 3, 4), mask (1, 3)
    with pytest.raises(ValueError, match="The `mask` must be broadcastable to `inputs`"):
        keras.layers.Softmax()(embedded)


def test_upstream_category_encoding_outputs_float32_under_mixed_float16():
    layer = keras.layers.CategoryEncoding(num_tokens=10, output_mode="multi_hot", dtype="mixed_float16")
    ids = np.array([[1, 2, 3]], dtype="int32")
    assert layer(ids).dtype == tf.float32
    assert layer.compute_output_spec(keras.KerasTensor((1, 3), "int32")).dtype == "float16"


def test_upstream_mel_spectrogram_fails_under_float64():
    layer = keras.layers.MelSpectrogram(fft_length=64, sequence_stride=16, num_mel_bins=8,
                                        dtype="float64")
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a double tensor"):
        layer(RNG.standard_normal((2, 128)))


def test_upstream_stft_spectrogram_fails_under_mixed_bfloat16():
    layer = keras.layers.STFTSpectrogram(frame_length=32, frame_step=16, fft_length=32,
                                         dtype="mixed_bfloat16")
    with pytest.raises(TypeError, match="Invalid input type"):
        layer(RNG.standard_normal((2, 128, 1)).astype("float32"))


def test_upstream_random_crop_does_not_crop_at_inference():
    layer = keras.layers.RandomCrop(4, 4)
    images = RNG.random((2, 8, 8, 3)).astype("float32")
    assert tuple(layer(images, training=False).shape) == (2, 8, 8, 3)
    assert tuple(layer.compute_output_shape((None, 8, 8, 3))) == (None, 4, 4, 3)


def test_upstream_equalization_cannot_be_in_a_functional_model():
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Equalization()(inputs)
    assert outputs is inputs
    with pytest.raises(ValueError, match="is part of a cycle"):
        keras.Model(inputs, outputs)


def test_upstream_mixup_cannot_be_compiled_by_xla_and_does_not_say_so():
    layer = keras.layers.MixUp()
    assert getattr(layer, "supports_jit", True) is True
    images = RNG.random((2, 8, 8, 3)).astype("float32")
    compiled = tf.function(lambda x: layer(x, training=False), jit_compile=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match="StatelessRandomGammaV3"):
        compiled(images)


def test_upstream_random_shear_does_not_survive_its_own_config():
    layer = keras.layers.RandomShear(0.2)
    with pytest.raises(TypeError, match="Error when deserializing class 'RandomShear'"):
        keras.layers.RandomShear.from_config(layer.get_config())


@pytest.mark.parametrize("make", [keras.metrics.F1Score, keras.metrics.FBetaScore,
                                  keras.metrics.R2Score], ids=["F1Score", "FBetaScore", "R2Score"])
def test_upstream_metric_result_raises_before_the_first_update(make):
    metric = make()
    with pytest.raises(AttributeError):
        metric.result()


def test_docs_list_the_sweep_and_every_upstream_defect():
    text = (ROOT / "docs" / "check.md").read_text()
    for name, checks in UPSTREAM_DEFECTS.items():
        entry = COMPONENTS[name]
        assert f"`{entry.covers}`" in text, name
        for check in checks:
            assert re.search(rf"`{re.escape(entry.covers)}`[^\n]*`{check}`", text), (name, check)
    for name in NOT_SWEPT:
        assert f"`{name}`" in text, name
