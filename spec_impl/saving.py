"""Saving that never leaves a half-written model behind, and loading that says what is wrong.

Keras 3 writes a `.keras` archive in place: a save interrupted midway leaves a truncated file
under the final name (and the previous good file is already gone), and `load_model` then reports
a truncated archive as "File not found". `save_model_atomic` writes to a temporary file in the
same folder and renames it over the target only once it is complete; `load_model_checked`
checks the archive first and raises a `ValueError` that names the problem.
"""

import contextlib
import os
import re
import uuid
import zipfile

import keras
import numpy as np

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
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError) and error.errno is not None:  # named by the target, not tmp
            raise type(error)(error.errno, error.strerror, path) from error
        raise


_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp")  # atomic_path's names


def _running(pid):
    if pid == os.getpid():  # this process is not writing it now: a dead run had the same pid
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder):
    """Remove the temporary files `atomic_path` left in `folder` when their process was killed
    mid-write (their process is gone); returns their names."""
    removed = []
    for name in sorted(os.listdir(folder)):
        match = _TEMPORARY.match(name)
        if match and not _running(int(match.group("pid"))):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(folder, name))
                removed.append(name)
    return removed


def non_finite_weights(model):
    """`"Non-finite weights (a/kernel, ...)"` naming the weights of `model` that hold NaN or
    infinity, or `None` when every weight is finite."""
    bad = [w.path for w in model.weights
           if "float" in str(w.dtype) and not np.all(np.isfinite(np.asarray(w)))]
    if not bad:
        return None
    return f"Non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"


def check_finite_weights(model, consequence):
    """Raise `FloatingPointError` naming the weights of `model` that hold NaN or infinity,
    followed by `consequence` (what was not done because of them)."""
    bad = non_finite_weights(model)
    if bad:
        raise FloatingPointError(f"{bad}: {consequence}.")


def write_atomic_text(path, text):
    """Write `text` to `path` atomically (`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        f.write(text)
    return os.fspath(path)


def save_figure_atomic(figure, path):
    """`figure.savefig(path)` atomically (`atomic_path`), in the format of `path`'s extension
    (PNG without one); returns `path`."""
    extension = os.path.splitext(os.fspath(path))[1].lstrip(".").lower()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=extension or "png")
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
