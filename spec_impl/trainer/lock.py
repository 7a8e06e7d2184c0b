"""One run per checkpoint folder: a lock file holding the owner's pid and host.

A second run on the same folder (a retried job, a double click) would otherwise train and
overwrite the first run's checkpoints. The lock is a file created with `O_CREAT | O_EXCL`
(atomic on a local file system); it is removed when the run ends, however it ends, short of the
process being killed. A lock left by a process that is gone (same host, pid no longer running)
is stale and is taken over with a warning; a lock from another host cannot be checked from here
and is respected.
"""

import json
import os
import socket
import time
import warnings

LOCK_NAME = "spec_impl.lock"


class CheckpointFolderLocked(RuntimeError):
    """Another run holds the checkpoint folder's lock."""


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class CheckpointLock:
    """`with CheckpointLock(folder):` holds `folder/spec_impl.lock` for the block.

    Raises:
        CheckpointFolderLocked: another live process (or another host) holds the lock; the
            message names the folder and the owner.
    """

    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self.path = os.path.join(self.folder, LOCK_NAME)
        self._held = False

    def _owner(self):
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None  # being written or removed right now, or not ours

    def _create(self):
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        with os.fdopen(fd, "w") as f:
            json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}, f)

    def acquire(self):
        os.makedirs(self.folder, exist_ok=True)
        for _ in range(2):  # a second try after taking over a stale lock
            try:
                self._create()
                self._held = True
                return self
            except FileExistsError:
                pass
            owner = self._owner()
            if owner is None:
                time.sleep(0.1)  # the owner is writing it: read it again
                owner = self._owner()
            here = socket.gethostname()
            stale = owner is not None and owner.get("host") == here \
                and not _alive(int(owner.get("pid", -1)))
            if not stale:
                who = "an unreadable lock" if owner is None else \
                    f"process {owner.get('pid')} on {owner.get('host')}"
                raise CheckpointFolderLocked(
                    f"The checkpoint folder {self.folder} is in use by {who} (lock file "
                    f"{self.path}). Wait for that run to end, or use another folder; if that "
                    f"run is gone, remove the lock file.")
            warnings.warn(f"Taking over the stale lock {self.path} of process {owner['pid']} on "
                          f"{here}, which is no longer running.", RuntimeWarning, stacklevel=3)
            try:  # only one of several runs taking over renames it; the others retry the create
                os.rename(self.path, f"{self.path}.stale-{os.getpid()}")
                os.remove(f"{self.path}.stale-{os.getpid()}")
            except FileNotFoundError:
                pass
        raise CheckpointFolderLocked(f"The checkpoint folder {self.folder} was locked by another "
                                     f"run while this one took over its stale lock {self.path}.")

    def release(self):
        if self._held:
            self._held = False
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
