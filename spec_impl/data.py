"""Data the project ships or makes: no downloads at run time.

`load_dataset("digits")` is the embedded default: scikit-learn's 1,797 real 8x8 handwritten
digits, resized to the model's input and repeated to 3 channels where the model wants them (as
the documents do for MNIST), with a fixed, stratified train / test split. MNIST, Fashion-MNIST and
CIFAR-10 are used only when their files are already in the local Keras cache.
"""

import math
import os

import numpy as np

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
REGRESSION_DATASETS = ("make_regression", "swiss_roll")
DIGITS_CLASS_NAMES = tuple(str(d) for d in range(10))
CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")  # document 000
# Where keras.datasets keeps each download, relative to the Keras cache (~/.keras/datasets).
_KERAS_CACHE_FILES = {
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar-10-batches-py",
}
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def keras_cache_dir():
    """The folder where `keras.datasets` looks for downloaded files."""
    base = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(base, "datasets")


def load_dataset(name="digits", *, input_shape=None, test_size=0.2, seed=0):
    """Load an image classification dataset as `(x_train, y_train), (x_test, y_test)`.

    Args:
        name: `"digits"` (embedded), `"mnist"`, `"fashion_mnist"`, `"cifar10"` (from the local
            Keras cache only), or a path to an `.npz` file with `x_train, y_train, x_test, y_test`.
        input_shape: the model's input shape without the batch axis: `(H, W, C)` resizes the
            images to H x W and repeats a single channel to C; `(N,)` resizes to a square of N
            pixels and flattens (N must be a perfect square). `None` keeps the native shape
            (with a channel axis added to grayscale images).
        test_size: fraction held out for testing (`"digits"` only; the others ship a split).
        seed: seed of the stratified split (`"digits"` only).

    Returns:
        Float32 images in [0, 1] and integer class ids (int64, shape `(n,)`).
    """
    if name == "digits":
        (x_train, y_train), (x_test, y_test) = _load_digits(test_size, seed)
    elif name in _KERAS_CACHE_FILES:
        (x_train, y_train), (x_test, y_test) = _load_from_keras_cache(name)
    elif str(name).endswith(".npz"):
        (x_train, y_train), (x_test, y_test) = _load_npz(name)
    else:
        raise ValueError(
            f"Unknown dataset {name!r}. Expected one of {', '.join(IMAGE_DATASETS)} "
            f"or a path to an .npz file with keys {', '.join(_NPZ_KEYS)}."
        )
    return (
        (_to_input_shape(x_train, input_shape), _labels(y_train)),
        (_to_input_shape(x_test, input_shape), _labels(y_test)),
    )


def class_names(name):
    """Human-readable class names of a dataset (class ids as strings when none are known)."""
    if name == "cifar10":
        return CIFAR10_CLASS_NAMES
    return DIGITS_CLASS_NAMES


def _load_digits(test_size, seed):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype("float32")  # (1797, 8, 8), pixel values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, digits.target, test_size=test_size, random_state=seed, stratify=digits.target
    )
    return (x_train, y_train), (x_test, y_test)


def _load_from_keras_cache(name):
    path = os.path.join(keras_cache_dir(), _KERAS_CACHE_FILES[name])
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"Dataset {name!r} is not in the local Keras cache (looked for {path}) and this "
            f"project downloads nothing. Use 'digits' (embedded) or an .npz file instead."
        )
    if name == "mnist":  # keras.datasets' mnist.npz has exactly the .npz layout read here
        return _load_npz(path)
    import keras

    return getattr(keras.datasets, name).load_data()


def _load_npz(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such dataset file: {path}")
    with np.load(path) as data:
        missing = [k for k in _NPZ_KEYS if k not in data]
        if missing:
            raise ValueError(
                f"{path} lacks the keys {missing}. Expected keys: {', '.join(_NPZ_KEYS)}; "
                f"found: {', '.join(sorted(data.files))}."
            )
        return (data["x_train"], data["y_train"]), (data["x_test"], data["y_test"])


def _labels(y):
    return np.asarray(y).reshape(-1).astype("int64")


def _to_input_shape(x, input_shape):
    x = np.asarray(x)
    if x.dtype == np.uint8:
        x = x.astype("float32") / 255.0
    x = x.astype("float32")
    if x.ndim == 3:
        x = x[..., None]  # (n, H, W, 1)
    if input_shape is None:
        return x
    input_shape = tuple(input_shape)
    if len(input_shape) == 1:
        side = math.isqrt(input_shape[0])
        if side * side != input_shape[0]:
            raise ValueError(
                f"A flat input shape must be a square number of pixels. Received: "
                f"input_shape={input_shape}"
            )
        x = _resize(x, side, side)
        if x.shape[-1] != 1:
            x = x.mean(axis=-1, keepdims=True)
        return x.reshape(len(x), -1)
    if len(input_shape) != 3:
        raise ValueError(
            f"Expected an image input shape (H, W, C) or a flat one (N,). Received: "
            f"input_shape={input_shape}"
        )
    height, width, channels = input_shape
    x = _resize(x, height, width)
    if x.shape[-1] == channels:
        return x
    if x.shape[-1] == 1:
        return np.repeat(x, channels, axis=-1)
    if channels == 1:
        return x.mean(axis=-1, keepdims=True)
    raise ValueError(
        f"Cannot turn {x.shape[-1]}-channel images into {channels} channels. Received: "
        f"input_shape={input_shape}"
    )


def _resize(x, height, width):
    if x.shape[1:3] == (height, width):
        return x
    import tensorflow as tf

    return tf.image.resize(x, (height, width), method="bilinear").numpy().astype("float32")


def load_regression(name="make_regression", *, seed=0):
    """Regression data of document 003 as `(x_train, y_train), (x_test, y_test)`, float32.

    `"make_regression"`: 2,000 samples, 5 informative features, no noise, standardized with a
    scaler fitted on the training split and applied to both (the document assigns the fitted
    scaler itself to `X_test`, a bug). `"swiss_roll"`: 3,000 points with noise 0.3; the target is
    the position along the roll. Both use a 75 / 25 split.
    """
    from sklearn.datasets import make_regression, make_swiss_roll
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    if name == "make_regression":
        x, y = make_regression(n_samples=2000, n_features=5, n_informative=5, n_targets=1,
                               noise=0, shuffle=True, random_state=seed)
    elif name == "swiss_roll":
        x, y = make_swiss_roll(3000, noise=0.3, random_state=seed)
    else:
        raise ValueError(
            f"Unknown regression dataset {name!r}. Expected one of {', '.join(REGRESSION_DATASETS)}."
        )
    x_train, x_test, y_train, y_test = train_test_split(x, y, random_state=seed)
    if name == "make_regression":
        scaler = StandardScaler().fit(x_train)
        x_train, x_test = scaler.transform(x_train), scaler.transform(x_test)
    f32 = lambda a: np.asarray(a, dtype="float32")  # noqa: E731  (a one-line helper)
    return (f32(x_train), f32(y_train)), (f32(x_test), f32(y_test))
