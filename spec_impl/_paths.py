"""Checks of the paths a command will write or read, made before any work starts (this module
imports no TensorFlow): a run must not train for ten minutes and then find it cannot write.

Writability is probed by creating a temporary file, which is what a write will meet (a
read-only mount, permissions, a full inode table); `os.access` says yes to root on a read-only
mount.
"""

import errno
import os
import tempfile


class BadPath(ValueError):
    """A path given on the command line cannot be used as asked."""


def _probe(folder, flag, path):
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise BadPath(f"{flag} {path}: cannot write in {folder} "
                      f"({error.strerror or errno.errorcode.get(error.errno, error)})") from None


def _existing_ancestor(path):
    folder = os.path.abspath(path)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    return folder


def output_folder(path, flag):
    """Check that `path` is a folder this process can write in, or can be created as one."""
    path = os.fspath(path)
    if os.path.exists(path) and not os.path.isdir(path):
        raise BadPath(f"{flag} {path}: expected a folder, but it is a file")
    ancestor = _existing_ancestor(path)
    if not os.path.isdir(ancestor):
        raise BadPath(f"{flag} {path}: cannot create a folder there: {ancestor} is a file")
    _probe(ancestor, flag, path)
    return path


def output_file(path, flag, *, create_folder=False):
    """Check that the file `path` can be written: it is not a folder, and its folder exists
    (or, with `create_folder`, can be created) and is writable."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise BadPath(f"{flag} {path}: expected a file name, but it is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    if create_folder:
        output_folder(folder, flag)
        return path
    if not os.path.isdir(folder):
        raise BadPath(f"{flag} {path}: the folder {folder} does not exist")
    _probe(folder, flag, path)
    return path


def input_file(path, flag):
    """Check that `path` is an existing, readable file."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise BadPath(f"{flag} {path}: expected a file, but it is a folder")
    if not os.path.exists(path):
        raise BadPath(f"{flag} {path}: no such file")
    if not os.access(path, os.R_OK):
        raise BadPath(f"{flag} {path}: not readable")
    return path
