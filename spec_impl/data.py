"""Data the project ships or makes: no downloads at run time.

`load_dataset("digits")` is the embedded default: scikit-learn's 1,797 real 8x8 handwritten
digits, resized to the model's input and repeated to 3 channels where the model wants them (as
the documents do for MNIST), with a fixed, stratified train / test split. MNIST, Fashion-MNIST and
CIFAR-10 are used only when their files are already in the local Keras cache, read here from
whichever layout Keras 2 or Keras 3 left there (never through `keras.datasets`, which downloads
whatever is missing).
"""

import gzip
import math
import os
import pickle

import numpy as np

IMAGE_DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")
MAX_PIXEL = 255  # integer images hold 8-bit pixels, scaled to [0, 1] by this
REGRESSION_DATASETS = ("make_regression", "swiss_roll")
DIGITS_CLASS_NAMES = tuple(str(d) for d in range(10))
CIFAR10_CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer",
                       "dog", "frog", "horse", "ship", "truck")  # document 000
# Where keras.datasets keeps each download, relative to the Keras cache (~/.keras/datasets):
# the candidates, first found wins. CIFAR-10: Keras 3 extracts the archive into
# `cifar-10-batches-py-target/` (the batches in an inner folder), Keras 2 into the folder itself.
_KERAS_CACHE_FILES = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": ("fashion-mnist",),
    "cifar10": (os.path.join("cifar-10-batches-py-target", "cifar-10-batches-py"),
                "cifar-10-batches-py"),
}
_FASHION_FILES = ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                  "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")
_CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def keras_home():
    """Keras's home folder, as Keras reads it: `$KERAS_HOME` when the variable is set, else
    `~/.keras`, or `/tmp/.keras` when the home folder is not writable."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def keras_cache_dir():
    """The folder where `keras.datasets` keeps downloaded files (`keras_home()/datasets`)."""
    return os.path.join(keras_home(), "datasets")


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
    try:
        return (
            (_to_input_shape(x_train, input_shape), _labels(y_train)),
            (_to_input_shape(x_test, input_shape), _labels(y_test)),
        )
    except ValueError as error:
        raise ValueError(f"Dataset {name}: {error}") from None


def class_names(name, num_classes=10):
    """Human-readable names of a dataset's `num_classes` classes: CIFAR-10's names, else the
    class ids as strings ("0", "1", ...), for any number of classes."""
    if name == "cifar10" and num_classes <= len(CIFAR10_CLASS_NAMES):
        return CIFAR10_CLASS_NAMES[:num_classes]
    return tuple(str(i) for i in range(num_classes))


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
    needed = {"mnist": (), "fashion_mnist": _FASHION_FILES, "cifar10": _CIFAR10_FILES}[name]
    candidates = [os.path.join(keras_cache_dir(), c) for c in _KERAS_CACHE_FILES[name]]
    found = [c for c in candidates
             if os.path.exists(c) and all(os.path.exists(os.path.join(c, f)) for f in needed)]
    if not found:
        raise FileNotFoundError(
            f"Dataset {name!r} is not in the local Keras cache (looked for {' and '.join(candidates)}"
            + (f", each holding {', '.join(needed)}" if needed else "")
            + ") and this project downloads nothing. Use 'digits' (embedded) or an .npz file "
            "instead."
        )
    path = found[0]
    if name == "mnist":  # keras.datasets' mnist.npz has exactly the .npz layout read here
        return _load_npz(path)
    if name == "fashion_mnist":
        y_train, x_train, y_test, x_test = (_read_idx(os.path.join(path, f)) for f in needed)
        return (x_train, y_train), (x_test, y_test)
    batches = [_read_cifar_batch(os.path.join(path, f)) for f in needed]
    x_train = np.concatenate([x for x, _ in batches[:-1]])
    y_train = np.concatenate([y for _, y in batches[:-1]])
    return (x_train, y_train), batches[-1]


def _read_idx(path):
    """An MNIST-format gzip file: labels after an 8-byte header, 28 x 28 images after 16."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if "labels" in os.path.basename(path):
        return np.frombuffer(raw, np.uint8, offset=8)
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)


class _ArraysOnly(pickle.Unpickler):
    """Unpickles numpy arrays and builtins only: a CIFAR batch cannot run code."""

    def find_class(self, module, name):
        if module.split(".")[0] == "numpy" and name in ("_reconstruct", "ndarray", "dtype",
                                                        "scalar"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")


def _read_cifar_batch(path):
    """One CIFAR-10 python batch: uint8 images `(n, 32, 32, 3)` and their labels."""
    with open(path, "rb") as f:
        batch = _ArraysOnly(f, encoding="bytes").load()
    images = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return images, np.asarray(batch[b"labels"], np.int64)


def _load_npz(path):
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such dataset file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"The dataset {path} is a folder: expected an .npz file with keys "
                         f"{', '.join(_NPZ_KEYS)}.")
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


def _scaled(x):
    """Images as float32 in [0, 1]: integer pixels 0..255 divided by 255 (any integer dtype);
    integer values outside that range are refused (their scale is unknown)."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) and x.size:
        low, high = int(x.min()), int(x.max())
        if low < 0 or high > MAX_PIXEL:
            raise ValueError(f"Integer images ({x.dtype}) with values {low}..{high}: expected "
                             f"pixels 0..{MAX_PIXEL}, or float images in [0, 1].")
        return x.astype("float32") / MAX_PIXEL
    return x.astype("float32")


def _to_input_shape(x, input_shape):
    x = _scaled(x)
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
