"""Saving that never leaves a half-written model behind, and loading that says what is wrong.

Keras 3 writes a `.keras` archive in place: a save interrupted midway leaves a truncated file
under the final name (and the previous good file is already gone), and `load_model` then reports
a truncated archive as "File not found". `save_model_atomic` writes to a temporary file in the
same folder and renames it over the target only once it is complete; `load_model_checked`
checks the archive first and raises a `ValueError` that names the problem.
"""

import contextlib
import os
import uuid
import zipfile

import keras

KERAS_SUFFIX = ".keras"
# Entries every .keras archive holds (Keras 3's saving_lib).
KERAS_ARCHIVE_ENTRIES = ("config.json", "metadata.json")


def _check_suffix(path):
    if not str(path).endswith(KERAS_SUFFIX):
        raise ValueError(f"Expected a path ending in '{KERAS_SUFFIX}'. Received: path={path!r}")


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path` (same folder, same extension) to write to; then
    flush it to disk and rename it over `path` (`os.replace`, atomic on POSIX), or, if writing
    failed, remove it and leave `path` as it was. The file is created by whatever writes it,
    so it gets the permissions the user's umask gives, as a plain `open` would."""
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
                               f"{os.path.splitext(name)[1]}")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_atomic_text(path, text):
    """Write `text` to `path` atomically (`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return os.fspath(path)


def save_figure_atomic(figure, path):
    """`figure.savefig(path)` atomically (`atomic_path`); returns `path`."""
    with atomic_path(path) as tmp:
        figure.savefig(tmp)
    return path


def save_model_atomic(model, path):
    """Save `model` to the `.keras` file `path` atomically.

    The model is written to a temporary `.keras` file in the same folder, flushed to disk, then
    renamed over `path` (`os.replace`, atomic on POSIX). An interrupted save leaves `path` as it
    was: absent, or the previous complete model. The file gets the permissions the user's umask
    gives.

    Args:
        model: a Keras model.
        path: the destination, ending in `.keras`.

    Returns:
        `path`.
    """
    _check_suffix(path)
    with atomic_path(path) as tmp:
        model.save(tmp)
    return os.fspath(path)


def check_keras_archive(path):
    """Raise a clear error unless `path` is a complete `.keras` archive."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file: {path}")
    problem = None
    if not zipfile.is_zipfile(path):
        problem = "it is not a zip archive"
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                names = set(archive.namelist())
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            problem = f"it cannot be read as a zip archive ({e})"
        else:
            missing = [n for n in KERAS_ARCHIVE_ENTRIES if n not in names]
            if bad is not None:
                problem = f"its entry {bad!r} is corrupt"
            elif missing:
                problem = f"it lacks {missing}"
    if problem:
        raise ValueError(
            f"{path} is truncated or not a Keras archive: {problem}. Expected a complete "
            f"'.keras' file as written by model.save(); size on disk: {os.path.getsize(path)} bytes."
        )


def load_model_checked(path, **kwargs):
    """`keras.models.load_model(path, **kwargs)` after checking a `.keras` archive is whole.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is truncated or not a Keras archive (where Keras itself would say
            "File not found").
    """
    if str(path).endswith(KERAS_SUFFIX):
        check_keras_archive(path)
    return keras.models.load_model(path, **kwargs)
