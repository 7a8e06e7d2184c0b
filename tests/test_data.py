"""Embedded and local data: digits, the Keras cache, .npz files, regression sets."""

import os

import numpy as np
import pytest

from spec_impl import load_dataset, load_regression
from spec_impl.data import CIFAR10_CLASS_NAMES, class_names

DIGITS_SAMPLES = 1_797  # scikit-learn's load_digits
DIGITS_TEST_FRACTION = 0.2


def test_digits_native_shape_and_split():
    (x_train, y_train), (x_test, y_test) = load_dataset("digits")
    assert len(x_train) + len(x_test) == DIGITS_SAMPLES
    assert len(x_test) == int(np.ceil(DIGITS_SAMPLES * DIGITS_TEST_FRACTION))
    assert x_train.shape[1:] == (8, 8, 1) and x_train.dtype == np.float32
    assert y_train.dtype == np.int64 and y_train.ndim == 1
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))


def test_digits_split_is_stratified_and_fixed():
    (_, y_train), (_, y_test) = load_dataset("digits")
    train_share = np.bincount(y_train) / len(y_train)
    test_share = np.bincount(y_test) / len(y_test)
    assert np.abs(train_share - test_share).max() < 0.01
    (_, y_again), _ = load_dataset("digits")
    assert np.array_equal(y_train, y_again)


@pytest.mark.parametrize("shape", [(28, 28, 3), (32, 32, 3), (28, 28, 1)])
def test_digits_resized_and_channel_repeated(shape):
    (x_train, _), (x_test, _) = load_dataset("digits", input_shape=shape)
    assert x_train.shape[1:] == shape and x_test.shape[1:] == shape
    if shape[-1] == 3:
        assert np.array_equal(x_train[..., 0], x_train[..., 2])


def test_digits_flat_for_the_mlp():
    (x_train, _), _ = load_dataset("digits", input_shape=(784,))
    assert x_train.shape[1:] == (784,)


def test_flat_shape_must_be_square():
    with pytest.raises(ValueError, match=r"square number of pixels. Received: input_shape=\(780,\)"):
        load_dataset("digits", input_shape=(780,))


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown dataset 'imagenet'. Expected one of digits, "
                                         r"mnist, fashion_mnist, cifar10"):
        load_dataset("imagenet")


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist", "cifar10"])
def test_keras_datasets_fail_fast_without_a_local_copy(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=f"{name!r} is not in the local Keras cache"):
        load_dataset(name)


def test_mnist_from_the_local_keras_cache(tmp_path, monkeypatch):
    # A stand-in for a previously downloaded mnist.npz, in the format keras.datasets reads.
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets").mkdir()
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "datasets" / "mnist.npz",
             x_train=rng.integers(0, 256, (6, 28, 28), dtype=np.uint8), y_train=np.arange(6),
             x_test=rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), y_test=np.arange(2))
    (x_train, y_train), (x_test, _) = load_dataset("mnist", input_shape=(28, 28, 3))
    assert x_train.shape == (6, 28, 28, 3) and x_test.shape == (2, 28, 28, 3)
    assert x_train.max() <= 1.0 and y_train.tolist() == list(range(6))


def test_npz_path(tmp_path):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((5, 8, 8)), y_train=np.arange(5).reshape(5, 1),
             x_test=rng.random((3, 8, 8)), y_test=np.arange(3).reshape(3, 1))
    (x_train, y_train), (x_test, y_test) = load_dataset(str(path), input_shape=(16, 16, 3))
    assert x_train.shape == (5, 16, 16, 3) and y_train.shape == (5,) and y_test.tolist() == [0, 1, 2]


def test_npz_missing_keys(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"lacks the keys \['y_train', 'x_test', 'y_test'\]"):
        load_dataset(str(path))


def test_make_regression_test_split_is_scaled_with_train_statistics():
    # Document 003 writes `X_test = std_scaler.fit(X_test)`, which stores the scaler object, not
    # data. Here the test split is transformed with the scaler fitted on the training split.
    (x_train, y_train), (x_test, y_test) = load_regression("make_regression")
    assert x_train.shape == (1500, 5) and x_test.shape == (500, 5)
    assert isinstance(x_test, np.ndarray) and x_test.dtype == np.float32
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    assert np.abs(x_test.mean(axis=0)).max() < 0.2  # same scaling, not re-centred


def test_swiss_roll_shapes():
    (x_train, y_train), (x_test, y_test) = load_regression("swiss_roll")
    assert x_train.shape == (2250, 3) and x_test.shape == (750, 3) and y_train.shape == (2250,)


def test_unknown_regression_dataset():
    with pytest.raises(ValueError, match=r"Expected one of make_regression, swiss_roll"):
        load_regression("boston")


# ---- the Keras cache as Keras 2 and Keras 3 leave it; never a download ----

def _cifar_batch(path, images, labels):
    """A CIFAR-10 python batch as the archive ships it: a pickled dict of bytes keys, images
    as rows of 3 x 32 x 32 channel-first pixels."""
    import pickle

    path.parent.mkdir(parents=True, exist_ok=True)
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    with open(path, "wb") as f:
        pickle.dump({b"data": rows, b"labels": list(labels)}, f)


@pytest.fixture
def no_download(monkeypatch):
    import keras

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(keras.utils, "get_file", refuse)
    for name in ("cifar10", "fashion_mnist", "mnist"):
        monkeypatch.setattr(getattr(keras.datasets, name), "load_data", refuse)


@pytest.mark.parametrize("layout", [
    "cifar-10-batches-py-target/cifar-10-batches-py",  # Keras 3 (3.15): extracted into -target
    "cifar-10-batches-py",  # Keras 2
])
def test_cifar10_from_either_keras_cache_layout(layout, tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    folder = tmp_path / "datasets" / layout
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(12) % 10
    for i in range(5):  # two images per training batch, two in the test batch
        _cifar_batch(folder / f"data_batch_{i + 1}", images[2 * i:2 * i + 2], labels[2 * i:2 * i + 2])
    _cifar_batch(folder / "test_batch", images[10:], labels[10:])
    (x_train, y_train), (x_test, y_test) = load_dataset("cifar10")
    np.testing.assert_array_equal(x_train, images[:10].astype("float32") / 255)
    np.testing.assert_array_equal(x_test, images[10:].astype("float32") / 255)
    assert y_train.tolist() == labels[:10].tolist() and y_test.tolist() == labels[10:].tolist()


def test_an_incomplete_cifar10_cache_names_what_is_missing(tmp_path, monkeypatch, no_download):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (tmp_path / "datasets" / "cifar-10-batches-py").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="each holding data_batch_1, .*test_batch\\) and "
                                                "this project downloads nothing"):
        load_dataset("cifar10")


def test_a_cifar_batch_cannot_run_code(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    folder = tmp_path / "datasets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": os.system}))
    with pytest.raises(pickle.UnpicklingError, match="posix.system is not allowed in a CIFAR batch"):
        load_dataset("cifar10")


def test_fashion_mnist_from_the_keras_cache(tmp_path, monkeypatch, no_download):
    import gzip

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    folder = tmp_path / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    parts = {"train": (rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), [1, 2, 3]),
             "t10k": (rng.integers(0, 256, (2, 28, 28), dtype=np.uint8), [4, 5])}
    for split, (images, labels) in parts.items():  # the idx headers: 8 and 16 bytes
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes(8) + bytes(labels))
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes(16) + images.tobytes())
    (x_train, y_train), (x_test, y_test) = load_dataset("fashion_mnist")
    np.testing.assert_array_equal(x_train[..., 0], parts["train"][0].astype("float32") / 255)
    assert y_train.tolist() == [1, 2, 3] and y_test.tolist() == [4, 5]
    assert x_test.shape == (2, 28, 28, 1)


def test_keras_home_is_read_as_keras_reads_it(tmp_path, monkeypatch):
    from spec_impl.data import keras_cache_dir, keras_home

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert keras_cache_dir() == str(tmp_path / "kh" / "datasets")
    monkeypatch.delenv("KERAS_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keras_home() == str(tmp_path / ".keras")


@pytest.mark.parametrize("name, classes, names", [
    ("cifar10", 10, CIFAR10_CLASS_NAMES),
    ("digits", 10, tuple("0123456789")),
    ("my.npz", 12, tuple(str(i) for i in range(12))),
    ("cifar10", 12, tuple(str(i) for i in range(12))),  # more classes than CIFAR-10 names
])
def test_class_names_for_any_number_of_classes(name, classes, names):
    assert class_names(name, classes) == names
