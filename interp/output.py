"""Output folders: the up-front checks, the lock a scan holds on its folder, and the user's file modes.

No torch here: the CLI runs these before it loads anything.

- :func:`check_output_dir` fails before any model work when ``out`` cannot receive a scan; it proves
  the folder is writable by creating (and removing) a file in the nearest existing ancestor, so
  ``/proc/x`` or a read-only mount fail here rather than after the first analysis.
- :func:`folder_lock` is the lock file ``out/.interp.lock`` (holder's pid inside). A second scan or
  report into the same folder stops at start-up with one line naming that pid; a lock left by a dead
  process is taken over.
- :func:`make_dirs` / :func:`publish_dir` give folders the user's umask (``mkdtemp`` makes 0700).
- Every file interp writes goes through :func:`atomic_file` (or :func:`write_text_atomic`), and every
  folder of results through :func:`staging_dir` or :func:`replace_dir`: written beside its target under
  a hidden name and moved in only when complete, so an error or Ctrl-C never leaves a half-written output.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


def _already_exists(path: Path) -> InterpError:
    return InterpError(f"{path} already exists; pass --overwrite (overwrite=True) to replace it")


@contextmanager
def atomic_file(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, move it to ``path``.

    The file gets the user's umask (``mkstemp`` makes 0600). Without ``overwrite`` an existing ``path``
    is never replaced: that fails before the block runs, and again atomically at the move (a hard
    link, which fails if another process created ``path`` meanwhile). On error nothing is left behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and not overwrite:
        raise _already_exists(path)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create only if absent"
            except FileExistsError:
                raise _already_exists(path) from None
            except OSError:  # filesystems without hard links
                os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str, *, overwrite: bool = False) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`atomic_file`; returns ``path``."""
    with atomic_file(path, overwrite=overwrite) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


@contextmanager
def staging_dir(out: str | os.PathLike) -> Iterator[Path]:
    """A hidden folder beside ``out`` (the user's folder mode) to write results into; removed at the end.

    The caller moves what it wrote into place (:func:`replace_dir`, or file by file with ``os.replace``).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        publish_dir(staging)
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def replace_dir(out: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(staging_folder)``, then put that folder at ``out``, replacing any folder there."""
    out = Path(out)
    with staging_dir(out) as staging:
        write(staging)
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.replace(out, old)
        os.replace(staging, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
