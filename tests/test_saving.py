"""Every save / reload path on Keras 3, the documents' Keras-2 idioms, and safe saving."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from spec_impl import (
    Exponential,
    HuberLoss,
    MiniInception,
    ReconstructionRegressor,
    ResidualRegressor,
    check_keras_archive,
    create_huber,
    exponential_layer,
    load_model_checked,
    save_model_atomic,
)
from spec_impl.testing import assert_allclose

RNG = np.random.default_rng(0)
X5 = RNG.normal(size=(4, 5)).astype("float32")
X_IMG = RNG.random((2, 32, 32, 3), dtype=np.float32)


def huber_sequential(loss):
    """Document 003's small regression model, compiled with `loss` and trained one step
    (so that the optimizer's variables exist and reload cleanly)."""
    model = keras.Sequential([
        keras.Input((5,)),
        keras.layers.Dense(20, activation="relu"),
        keras.layers.Dense(10, activation="relu"),
        keras.layers.Dense(1),
    ])
    model.compile(loss=loss, optimizer="nadam")
    model.fit(X5, np.ones((4, 1), "float32"), epochs=1, verbose=0)
    return model


def mini_inception():
    model = MiniInception(num_classes=3)
    model.build((None, 32, 32, 3))
    return model


def residual_regressor():
    model = ResidualRegressor(1)
    model.build((None, 5))
    return model


def reconstruction_regressor():
    model = ReconstructionRegressor(1)
    model(X5)
    return model


MODELS = {
    "mini_inception": (mini_inception, X_IMG),
    "residual_regressor": (residual_regressor, X5),
    "reconstruction_regressor": (reconstruction_regressor, X5),
    "sequential_huber": (lambda: huber_sequential(HuberLoss(2.0)), X5),
}


# ---- .keras, the native format ----


@pytest.mark.parametrize("name", list(MODELS), ids=list(MODELS))
def test_keras_format_round_trip_without_custom_objects(name, tmp_path):
    make, x = MODELS[name]
    model = make()
    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert type(reloaded) is type(model)
    assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_huber_loss_threshold_survives_reload(tmp_path):
    huber_sequential(HuberLoss(2.0)).save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, HuberLoss) and reloaded.loss.threshold == 2.0


def test_unregistered_loss_function_needs_custom_objects(tmp_path):
    huber_sequential(create_huber(2.0)).save(tmp_path / "m.keras")
    with pytest.raises(TypeError, match="Could not locate function 'huber_fn'"):
        keras.models.load_model(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras",
                                       custom_objects={"huber_fn": create_huber(2.0)})
    assert reloaded.loss.__name__ == "huber_fn"


# ---- legacy HDF5 full-model files ----


def test_legacy_h5_full_model_with_custom_objects(tmp_path):
    model = huber_sequential(create_huber(2.0))
    model.save(tmp_path / "m.h5")  # legacy: Keras logs a recommendation to use .keras
    # (Without custom_objects the HDF5 loader fails: tests/test_idioms.py, h5_unregistered_loss.)
    reloaded = keras.models.load_model(tmp_path / "m.h5",
                                       custom_objects={"huber_fn": create_huber(2.0)})
    assert_allclose(reloaded.predict(X5, verbose=0), model.predict(X5, verbose=0))


def test_legacy_h5_cannot_reload_a_subclassed_model(tmp_path):
    # HDF5 stores configs, not code: registration does not help the legacy loader.
    residual_regressor().save(tmp_path / "m.h5")
    with pytest.raises(ValueError, match="Unknown layer: 'ResidualRegressor'"):
        keras.models.load_model(tmp_path / "m.h5")


# ---- SavedModel ----


def test_export_needs_a_called_model():
    with pytest.raises(ValueError, match="must be called at least once before export"):
        mini_inception().export("unused_dir")


# A SavedModel runs a graph, which TensorFlow optimizes (fused matmul + bias + activation on
# oneDNN) where the eager call does not: the float32 sums come in another order. Outputs of up to
# ~50 then differ by a few ulp (measured: 6.7e-6 absolute, 1.2e-5 relative); a wrong weight or a
# lost layer moves them by orders more.
GRAPH_ROUND_OFF = {"atol": 2e-5, "rtol": 2e-5}


def _graph_output(model, x):
    """The model's output from a traced graph, as a SavedModel computes it."""
    return tf.function(lambda t: model(t, training=False))(tf.constant(x))


@pytest.mark.parametrize("name", ["mini_inception", "residual_regressor"])
def test_export_reloads_through_tfsm_layer_and_saved_model_load(name, tmp_path):
    make, x = MODELS[name]
    model = make()
    expected = _graph_output(model, x)
    model.export(str(tmp_path / "exported"), verbose=False)
    layer = keras.layers.TFSMLayer(str(tmp_path / "exported"), call_endpoint="serve")
    assert_allclose(layer(x), expected, **GRAPH_ROUND_OFF)
    loaded = tf.saved_model.load(str(tmp_path / "exported"))
    assert_allclose(loaded.serve(x), expected, **GRAPH_ROUND_OFF)


def test_tf_saved_model_save_round_trip(tmp_path):
    model = residual_regressor()
    expected = _graph_output(model, X5)
    tf.saved_model.save(model, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    outputs = loaded.signatures["serving_default"](tf.constant(X5))
    assert_allclose(next(iter(outputs.values())), expected, **GRAPH_ROUND_OFF)


# ---- weights only ----


def test_weights_into_unbuilt_subclassed_model_raise_then_load_after_build(tmp_path):
    model = mini_inception()
    model.save_weights(tmp_path / "net.weights.h5")
    fresh = MiniInception(num_classes=3)
    # Unbuilt, it refuses (document 000's error): tests/test_idioms.py,
    # load_weights_unbuilt_subclassed. Built, it loads.
    fresh.build((None, 32, 32, 3))
    fresh.load_weights(tmp_path / "net.weights.h5")
    assert_allclose(fresh.predict(X_IMG, verbose=0), model.predict(X_IMG, verbose=0))


def test_tf_train_checkpoint_round_trip(tmp_path):
    model = residual_regressor()
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    fresh = residual_regressor()
    assert not np.allclose(fresh(X5), model(X5))
    tf.train.Checkpoint(model=fresh).read(path).assert_existing_objects_matched()
    assert_allclose(fresh(X5), model(X5))


# The documents' Keras-2 saving idioms (save_format='tf', a folder, plain .h5 weights, an int
# InputLayer shape, l2(l=...), an unbuilt model's load_weights, an unregistered loss in .h5,
# layers held in a list under tf.train.Checkpoint) are pinned once, on both Kerases, in
# tests/test_idioms.py.


# ---- safety ----


def lambda_model():
    return keras.Sequential([keras.Input((3,)), exponential_layer])


def test_lambda_layer_is_refused_in_safe_mode(tmp_path):
    lambda_model().save(tmp_path / "lambda.keras")
    with pytest.raises(ValueError, match="arbitrary code execution"):
        keras.models.load_model(tmp_path / "lambda.keras")


def test_lambda_layer_loads_unsafely_but_lost_its_globals(tmp_path):
    lambda_model().save(tmp_path / "lambda.keras")
    reloaded = keras.models.load_model(tmp_path / "lambda.keras", safe_mode=False)
    with pytest.raises(NameError, match="name 'ops' is not defined"):
        reloaded(np.ones((1, 3), "float32"))


def test_exponential_layer_needs_neither(tmp_path):
    model = keras.Sequential([keras.Input((3,)), Exponential()])
    model.save(tmp_path / "exp.keras")
    reloaded = keras.models.load_model(tmp_path / "exp.keras")
    assert_allclose(reloaded(np.ones((1, 3), "float32")), np.full((1, 3), np.e))


# ---- atomic saving and checked loading ----


def test_truncated_archive_is_reported_as_file_not_found_by_keras(tmp_path):
    path = tmp_path / "m.keras"
    residual_regressor().save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="File not found"):
        keras.models.load_model(path)
    with pytest.raises(ValueError, match=r"m\.keras is truncated or not a Keras archive"):
        load_model_checked(path)


def test_load_model_checked_other_failures(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such model file"):
        load_model_checked(tmp_path / "absent.keras")
    (tmp_path / "text.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a zip archive"):
        load_model_checked(tmp_path / "text.keras")


def test_save_model_atomic_round_trip_and_suffix(tmp_path):
    model = residual_regressor()
    path = save_model_atomic(model, tmp_path / "m.keras")
    assert os.listdir(tmp_path) == ["m.keras"]
    assert_allclose(load_model_checked(path).predict(X5, verbose=0), model.predict(X5, verbose=0))
    with pytest.raises(ValueError, match=r"ending in '\.keras'. Received: path="):
        save_model_atomic(model, tmp_path / "m.h5")


def test_failed_save_keeps_the_previous_good_file(tmp_path):
    path = tmp_path / "m.keras"
    good = residual_regressor()
    save_model_atomic(good, path)

    class Unsavable(keras.layers.Layer):
        def call(self, x):
            return x

        def get_config(self):
            raise RuntimeError("cannot serialize")

    bad = keras.Sequential([keras.Input((5,)), Unsavable()])
    with pytest.raises(RuntimeError, match="cannot serialize"):
        save_model_atomic(bad, path)
    assert os.listdir(tmp_path) == ["m.keras"]  # no temporary file left behind
    assert_allclose(load_model_checked(path).predict(X5, verbose=0), good.predict(X5, verbose=0))


KILLED_SAVER = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from spec_impl import save_model_atomic
    path = sys.argv[1]
    model = keras.Sequential([keras.Input((1000,)), keras.layers.Dense(2000), keras.layers.Dense(1000)])
    save_model_atomic(model, path)
    print("saved", flush=True)
    while True:
        model.layers[0].kernel.assign(model.layers[0].kernel + 1.0)
        save_model_atomic(model, path)
""")


@pytest.mark.slow
def test_save_killed_midway_leaves_the_last_complete_file(tmp_path):
    path = tmp_path / "model.keras"
    proc = subprocess.Popen([sys.executable, "-c", KILLED_SAVER, str(path)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "saved"
        deadline = time.time() + 120
        temp = []
        while time.time() < deadline:  # wait until a later save is half-way through
            temp = [p for p in tmp_path.iterdir() if p.name != "model.keras" and p.stat().st_size]
            if temp:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert temp, "the child never started a second save"
    check_keras_archive(path)  # raises if the file under the final name is not complete
    reloaded = load_model_checked(path)
    assert reloaded.count_params() == 1000 * 2000 + 2000 + 2000 * 1000 + 1000
