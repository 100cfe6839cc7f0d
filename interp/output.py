"""Output folders: the up-front checks, the lock a scan holds on its folder, and the user's file modes.

No torch here: the CLI runs these before it loads anything.

- :func:`check_output_dir` fails before any model work when ``out`` cannot receive a scan; it proves
  the folder is writable by creating (and removing) a file in the nearest existing ancestor, so
  ``/proc/x`` or a read-only mount fail here rather than after the first analysis.
- :func:`folder_lock` is the lock file ``out/.interp.lock`` (holder's pid inside). A second scan or
  report into the same folder stops at start-up with one line naming that pid; a lock left by a dead
  process is taken over.
- :func:`make_dirs` / :func:`publish_dir` give folders the user's umask (``mkdtemp`` makes 0700).
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from interp.errors import InterpError

LOCK_FILE = ".interp.lock"
REPORT_FILE = "report.html"
EXPORT_FORMATS = ("csv", "parquet", "json")
# Files a scan folder holds besides the per-analysis checkpoints in analyses/ (extra tables: scan.json "tables").
SCAN_FILES = ("heads.csv", "scan.json", "heads.parquet", "heads.json", "report.html")


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p`` with the user's umask; returns the folders it created, outermost first."""
    created = []
    for folder in reversed([path, *path.parents]):
        if not folder.exists():
            folder.mkdir()
            created.append(folder)
    return created


def publish_dir(folder: Path) -> None:
    """Give a staging folder made by ``tempfile.mkdtemp`` (mode 0700) the usual folder mode."""
    os.chmod(folder, 0o777 & ~umask())


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def check_writable(out: Path, *, flag: str = "--out") -> None:
    """Fail unless a file can be created where ``out`` lives (in ``out`` itself or its nearest existing ancestor)."""
    parent = _existing_ancestor(out)
    if not parent.is_dir():
        raise InterpError(f"{flag} {out}: {parent} is a file, not a folder; choose a folder path")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".interp-write-test-")
    except OSError as error:
        reason = os.strerror(error.errno) if error.errno else str(error)
        raise InterpError(f"cannot write to {parent} ({reason}); choose an {flag} folder you can write to") from None
    os.close(fd)
    os.unlink(probe)


def check_output_dir(out: Path, *, overwrite: bool, resume: bool = False) -> None:
    """Fail early, before any model work, if ``out`` cannot receive a scan."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InterpError(f"--out {out} is a file; choose a folder path")
    if overwrite and resume:
        raise InterpError("--overwrite and --resume contradict each other: resume keeps finished analyses; pick one")
    if out.is_dir() and any((out / name).exists() for name in SCAN_FILES) and not (overwrite or resume):
        raise InterpError(f"{out} already holds a scan; pass --overwrite (or --resume) or choose another --out")
    check_writable(out)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError as error:
        return error.errno == errno.EPERM
    return True


def lock_holder(folder: Path) -> int | None:
    """The pid holding ``folder``'s lock, or None when it is free (a dead holder counts as free)."""
    try:
        pid = int((Path(folder) / LOCK_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) and pid != os.getpid() else None


@contextmanager
def folder_lock(folder: str | os.PathLike, *, what: str = "scan") -> Iterator[Path]:
    """Hold ``folder/.interp.lock`` for the duration (creating ``folder`` if needed).

    Raises a one-line :class:`InterpError` naming the holder's pid when another live process holds it.
    On exit the lock is removed, and so are the folders this call created if they are still empty.
    """
    folder = Path(folder)
    created = make_dirs(folder)
    lock = folder / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = lock_holder(folder)
            if holder is not None:
                _remove_empty(created)
                raise InterpError(
                    f"{folder} is in use by another interp process (pid {holder}); wait for it to finish or "
                    f"choose another folder"
                ) from None
            lock.unlink(missing_ok=True)  # left behind by a process that died
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {what}\n")
        break
    else:
        raise InterpError(f"could not take the lock {lock}; remove it if no interp process is running")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
        _remove_empty(created)


def _remove_empty(created: list[Path]) -> None:
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break
