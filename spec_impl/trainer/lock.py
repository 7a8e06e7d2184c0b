"""One run per checkpoint folder: a lock file the run holds with `fcntl.flock`.

A second run on the same folder (a retried job, a double click) would otherwise train and
overwrite the first run's checkpoints. The run opens `spec_impl.lock` and holds an exclusive
`flock` on it: the kernel releases it when the process ends, however it ends (`kill -9`, an OOM
kill, a container restart), so a lock is never left held by a dead run, and a new process that
happens to get the dead run's pid (pid 1 after a container restart) is not mistaken for it. The
file also names the holder (pid, host, start time) for the messages. A lock file whose `flock`
is free is stale and is taken over with a warning; one written on another host is respected
(its holder cannot be checked from here).

The lock is checked again before every checkpoint (`CheckpointLock.verify`): a folder removed
under a running run is re-created and its lock taken again, or, if another run has taken it
meanwhile, the run stops with `CheckpointFolderLost`. Removing the file at the end never masks
the error that ended the run: a file that cannot be removed (a read-only folder) stays, and the
next run takes it over.
"""

import contextlib
import fcntl
import json
import os
import socket
import time
import warnings

from spec_impl.trainer.checkpointing import CheckpointWriteError

LOCK_NAME = "spec_impl.lock"


class CheckpointFolderLocked(RuntimeError):
    """Another run holds the checkpoint folder's lock."""


class CheckpointFolderLost(CheckpointWriteError):
    """The checkpoint folder was removed during the run and another run has taken it since."""


def _read(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None  # empty (being written), removed, or not ours


def _describe(owner):
    if owner is None:
        return "another run (its lock file names no owner yet)"
    return f"process {owner.get('pid')} on {owner.get('host')}"


class CheckpointLock:
    """`with CheckpointLock(folder):` holds `folder/spec_impl.lock` for the block.

    Raises:
        CheckpointFolderLocked: another live run (or a run on another host) holds the lock; the
            message names the folder and the owner.
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._fd = None

    def _ours(self):
        """Whether the file at `path` is the one this lock holds."""
        try:
            return os.stat(self.path).st_ino == os.fstat(self._fd).st_ino
        except FileNotFoundError:
            return False

    def _try_take(self):
        """Open the lock file and `flock` it; returns the previous owner's record (or `None`
        for a new file). Raises `CheckpointFolderLocked` when a live run holds it."""
        os.makedirs(self.folder, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                owner = _read(self.path)
                raise CheckpointFolderLocked(
                    f"The checkpoint folder {self.folder} is in use by {_describe(owner)} (lock "
                    f"file {self.path}). Wait for that run to end, or use another folder.") from None
            self._fd = fd
            if self._ours():  # not a file its holder removed between our open and flock
                break
            os.close(fd)
            self._fd = None
        previous = _read(self.path)
        if previous is not None and previous.get("host") != socket.gethostname():
            self._close()
            raise CheckpointFolderLocked(
                f"The checkpoint folder {self.folder} is in use by {_describe(previous)} (lock "
                f"file {self.path}), another host, whose run cannot be checked from here. Wait "
                f"for that run to end, or use another folder; if that run is gone, remove the "
                f"lock file.")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                        "started": time.time()}).encode(), 0)
        os.fsync(self._fd)
        return previous

    def acquire(self):
        previous = self._try_take()
        if previous is not None:
            warnings.warn(f"Taking over the stale lock {self.path} of process {previous.get('pid')} "
                          f"on {previous.get('host')}, which no longer holds it (that run has "
                          f"ended).", RuntimeWarning, stacklevel=3)
        return self

    def verify(self):
        """Check that this run still holds the folder (call before writing into it). A lock
        file that is gone (the folder was removed) is taken again with a warning.

        Raises:
            CheckpointFolderLost: another run holds the folder now.
        """
        if self._fd is None or self._ours():
            return
        self._close()
        try:
            self._try_take()
        except CheckpointFolderLocked:
            raise CheckpointFolderLost(
                f"The checkpoint folder {self.folder} was removed during this run, and "
                f"{_describe(_read(self.path))} has taken it since: this run stops without "
                f"writing there.") from None
        warnings.warn(f"The checkpoint folder {self.folder} (or its lock file) was removed "
                      f"during the run; took its lock again.", RuntimeWarning, stacklevel=3)

    def _close(self):
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None

    def release(self):
        """Remove the lock file (if it is still this run's) and release the lock. A file that
        cannot be removed stays behind; its flock is released, so the next run takes it over."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            if self._ours():
                os.remove(self.path)
        self._close()

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
