"""Run folders: every ``cdflow fit`` writes into a folder of its own, locked while it runs.

Layout under ROOT = ``--trainer.default_root_dir``, after three runs::

    ROOT/              run 1: checkpoints/, wandb/ and config.yaml (or csv/version_0/), figures/
    ROOT/version_1/    run 2, laid out the same way
    ROOT/version_2/    run 3

* A new run writes into ROOT when ROOT holds no run (none of `RUN_ENTRIES` and no ``version_<n>``), else
  into ``ROOT/version_<n+1>``, n the highest version there. The version folder is made with `os.mkdir`,
  which fails if it exists, and ROOT is taken only under its lock: two runs starting at the same moment
  never end in the same folder.
* A run given ``--ckpt_path <folder>/checkpoints/<file>.ckpt`` resumes in ``<folder>`` (whatever ROOT is):
  its checkpoints continue there, its logs get a new version, ``config.yaml`` is rewritten. A checkpoint
  from elsewhere starts a new run folder.
* ``--ckpt_path last`` is the most recently written ``last*.ckpt`` of ROOT and its version folders (the
  CLI prints which); with none, a new run starts.
* While a run writes, ``<folder>/.cdflow.lock`` holds its PID under an exclusive `fcntl.flock`. A second
  writer (e.g. a resume of a run still going) is refused with `RunFolderInUse`. The kernel drops the lock
  when its process ends, however it ends, so a lock file left behind is stale: it is taken over with a
  notice. (Without `fcntl`, i.e. on Windows, the PID is written but nothing is locked.)
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cdflow.errors import RunFolderError, RunFolderInUse
from cdflow.training.atomic_checkpoint import pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover — Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".cdflow.lock"
VERSION_PREFIX = "version_"
#: What a run writes into its folder: a folder holding any of these holds a run.
RUN_ENTRIES = ("checkpoints", "config.yaml", "csv", "wandb", "figures")


# -- layout ---------------------------------------------------------------------------------------------
def versions(root: str | os.PathLike[str]) -> dict[int, Path]:
    """The ``version_<n>`` run folders of `root`, by n."""
    root = Path(root)
    found: dict[int, Path] = {}
    with contextlib.suppress(OSError):
        for path in root.iterdir():
            n = path.name[len(VERSION_PREFIX):]
            if path.name.startswith(VERSION_PREFIX) and n.isdigit() and path.is_dir():
                found[int(n)] = path
    return dict(sorted(found.items()))


def holds_run(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder` holds a run's files (or version folders of runs)."""
    folder = Path(folder)
    return any((folder / name).exists() for name in RUN_ENTRIES) or bool(versions(folder))


def run_folders(root: str | os.PathLike[str]) -> list[Path]:
    """`root` and its version folders, oldest first."""
    return [Path(root), *versions(root).values()]


def find_last_checkpoint(root: str | os.PathLike[str]) -> Path | None:
    """The most recently written ``checkpoints/last*.ckpt`` of `root` and its version folders, if any."""
    found = [p for folder in run_folders(root) for p in (folder / "checkpoints").glob("last*.ckpt") if p.is_file()]
    order = {p: i for i, p in enumerate(found)}  # on equal times, the newer version folder
    return max(found, key=lambda p: (p.stat().st_mtime_ns, order[p]), default=None)


def run_folder_of(ckpt_path: str | os.PathLike[str]) -> Path | None:
    """The run folder of an existing ``<folder>/checkpoints/<file>``; None for a file elsewhere."""
    path = Path(ckpt_path)
    return path.parent.parent if path.parent.name == "checkpoints" and path.is_file() else None


# -- permissions ------------------------------------------------------------------------------------------
def unusable(folder: Path, err: OSError) -> RunFolderError:
    """The error for a run folder that cannot be created or written, naming the cause and the fix."""
    blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        why = f"{blocker} is a file, not a folder"
        fix = "choose another folder with --trainer.default_root_dir DIR, or move that file away"
    elif isinstance(err, PermissionError):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), folder)
        why = f"no permission to write in {existing}"
        fix = (f"choose a folder you can write to with --trainer.default_root_dir DIR, or make it writable "
               f"(chmod u+w {existing})")
    else:
        why = err.strerror or str(err)
        fix = "choose another folder with --trainer.default_root_dir DIR"
    return RunFolderError(f"cannot write the run folder {folder}: {why}; {fix}")


def make_folder(folder: Path) -> bool:
    """Create `folder` (and its parents) unless it exists; check that it is writable; True if it was made."""
    existed = folder.is_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise unusable(folder, err) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise unusable(folder, PermissionError(13, "Permission denied", str(folder)))
    return not existed


# -- the lock ---------------------------------------------------------------------------------------------
def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = os.read(fd, 64).decode(errors="replace").strip()
    return int(data) if data.isdigit() else None


def _open_locked(path: Path) -> tuple[int | None, int | None]:
    """(descriptor holding the lock, PID of the previous holder) or (None, PID of the current holder)."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is None:  # pragma: no cover — no locking available
            return fd, _read_pid(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            return None, holder
        except BaseException:
            os.close(fd)
            raise
        try:  # its holder may have released and removed this file since we opened it
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, _read_pid(fd)
        os.close(fd)


class RunLock:
    """The exclusive lock of a run folder (``<folder>/.cdflow.lock``), held until `release`.

    Use `acquire` (raises `RunFolderInUse` when held) or `try_acquire` (None when held).
    """

    def __init__(self, folder: Path, fd: int, stale_pid: int | None) -> None:
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.stale_pid = stale_pid  # the PID of a lock file left behind and taken over, if any
        self._fd: int | None = fd

    @classmethod
    def _attempt(cls, folder: Path, notice: bool = True) -> tuple[RunLock | None, int | None]:
        """(the lock, None) or (None, the holder's PID)."""
        try:
            fd, previous = _open_locked(folder / LOCK_NAME)
        except OSError as err:
            raise unusable(folder, err) from None
        if fd is None:
            return None, previous
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, f"{os.getpid()}\n".encode())
        lock = cls(folder, fd, previous if previous is not None and previous != os.getpid() else None)
        if notice:
            lock.notice()
        return lock, None

    @classmethod
    def try_acquire(cls, folder: str | os.PathLike[str], notice: bool = True) -> RunLock | None:
        """The lock of `folder`, or None if another holds it (`notice`: print `notice` on taking over)."""
        return cls._attempt(Path(folder), notice)[0]

    @classmethod
    def acquire(cls, folder: str | os.PathLike[str]) -> RunLock:
        """The lock of `folder`; `RunFolderInUse` if another holds it."""
        folder = Path(folder)
        lock, holder = cls._attempt(folder)
        if lock is None:
            who = f"PID {holder}" if holder is not None else "a process whose PID could not be read"
            raise RunFolderInUse(
                f"the run folder {folder} is in use by another cdflow run ({who}, lock file {folder / LOCK_NAME}). "
                "Wait for that run to finish, or choose another folder with --trainer.default_root_dir DIR; "
                f"if no such process is running (a stale lock, e.g. on a network file system), remove "
                f"{folder / LOCK_NAME}"
            )
        return lock

    def notice(self) -> None:
        """Tell the user, on stderr, that a stale lock was taken over (nothing if it was not)."""
        if self.stale_pid is not None:
            state = "which still runs but no longer holds it" if pid_alive(self.stale_pid) else \
                "which is no longer running"
            print(f"cdflow: taking over the stale lock of {self.folder} (left by PID {self.stale_pid}, {state})",
                  file=sys.stderr)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Remove the lock file and unlock (in that order: a waiter that opened it re-checks the file)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# -- choosing the folder ----------------------------------------------------------------------------------
@dataclass
class RunFolder:
    """The folder a run writes into, locked by this process.

    Attributes:
        path: the run folder.
        lock: its lock.
        created: made by this run (`release` removes it again if the run wrote nothing).
        ckpt_path: what ``Trainer.fit`` gets as ``ckpt_path`` (``last`` resolved to a file; None: a new run).
        note: one line for the user: where the run goes, and why.
    """

    path: Path
    lock: RunLock
    created: bool
    ckpt_path: str | None
    note: str

    def release(self) -> None:
        self.lock.release()
        if self.created:
            with contextlib.suppress(OSError):
                self.path.rmdir()  # only when empty


def claim_new_run_folder(root: str | os.PathLike[str]) -> tuple[Path, RunLock, bool]:
    """A folder for a new run under `root`, locked: `root` itself if it holds no run, else a new version folder."""
    root = Path(root)
    created = make_folder(root)
    if not holds_run(root):
        lock = RunLock.try_acquire(root, notice=False)
        if lock is not None:
            # Recheck under the lock: another run may have used it meanwhile (not its version folders, made
            # by runs that found it locked).
            if not any((root / name).exists() for name in RUN_ENTRIES):
                lock.notice()
                return root, lock, created
            lock.release()
    n = max(versions(root), default=0) + 1
    while True:
        folder = root / f"{VERSION_PREFIX}{n}"
        try:
            folder.mkdir()  # atomic: of two runs making the same version, one fails and takes the next
        except FileExistsError:
            n += 1
            continue
        except OSError as err:
            raise unusable(folder, err) from None
        lock = RunLock.try_acquire(folder)
        if lock is not None:
            return folder, lock, True
        n += 1  # pragma: no cover — a folder we just made, locked by another process


def claim_run_folder(root: str | os.PathLike[str], ckpt_path: str | None = None) -> RunFolder:
    """The run folder of a ``fit`` with ``default_root_dir`` `root` and ``ckpt_path`` `ckpt_path`, locked.

    Raises:
        RunFolderInUse: the checkpoint's run folder is locked by another live process.
        RunFolderError: the folder cannot be created or written.
    """
    root = Path(root)
    note = ""
    if ckpt_path == "last":
        last = find_last_checkpoint(root)
        if last is None:
            note = f"--ckpt_path last: no last checkpoint under {root} yet, so a new run; "
            ckpt_path = None
        else:
            ckpt_path = str(last)
    home = run_folder_of(ckpt_path) if ckpt_path else None
    if home is not None:
        make_folder(home)
        lock = RunLock.acquire(home)
        return RunFolder(home, lock, False, ckpt_path, f"resuming from {ckpt_path} in its run folder {home}")
    path, lock, created = claim_new_run_folder(root)
    where = f"run folder {path}" + (f" ({root} holds earlier runs)" if path != root else "")
    if ckpt_path:
        where += f", continuing from {ckpt_path} (not in a run folder's checkpoints/)"
    return RunFolder(path, lock, created, ckpt_path, note + where)


def run_name(folder: str | os.PathLike[str]) -> str:
    """A readable run name: the folder's name, with its parent's for a version folder (``digits-version_1``)."""
    folder = Path(folder).resolve()
    return f"{folder.parent.name}-{folder.name}" if folder.name.startswith(VERSION_PREFIX) else folder.name


def worker_run_folder(root: str | os.PathLike[str], ckpt_path: str | None,
                      claimed: str | os.PathLike[str] | None = None) -> tuple[Path, str | None]:
    """The folder and ``ckpt_path`` of a DDP worker (rank > 0), which claims nothing: the folder its rank 0
    `claimed` (passed down by the CLI in the environment) when known, else the one a resume writes into,
    else `root` (rank 0 broadcasts the checkpoint folder anyway); ``last`` resolved as rank 0 resolved it
    (no checkpoint is written before training starts, so both find the same file)."""
    if ckpt_path == "last":
        last = find_last_checkpoint(root)
        ckpt_path = str(last) if last is not None else None
    home = run_folder_of(ckpt_path) if ckpt_path else None
    return Path(claimed or home or root), ckpt_path
