"""Run folders (``--out``): atomic result files, the metrics log, an exclusive lock, one kind of run per folder.

* :func:`atomic_write_text` / :func:`write_json`: the file is written to ``<name>.tmp.<pid>`` in the same folder,
  flushed and fsynced, then renamed over the target (``os.replace``), so a reader (or a rerun after a crash) sees
  the old file or the new one, never half of one. Content equal to what is there already is not rewritten (the
  file and its modification time stay as they are), so rerunning a finished run touches nothing.
* :func:`read_metrics`: ``metrics.jsonl`` as records. A torn last line (the run died while appending it) is
  dropped with a warning; any other line that is not JSON is an error naming the file and the line (it is not
  the trace of a crash, and dropping it silently would hide a lost record).
* :func:`hold`: an exclusive lock on the folder for the run's lifetime, ``<out>/.lock``, taken with
  ``fcntl.flock`` (non-blocking) and holding ``"<pid> <host>"``. A second run on the folder fails at once with
  "in use by process N". The kernel drops a dead process's lock, so the file a killed run leaves behind is stale
  by construction: the next run takes it over (and warns). Released, and the file removed, when the run ends.
  Re-entrant in one process (the experiment's ``main`` and the training loop both hold it). In a multi-process
  run process 0 holds it for all processes, which wait for its answer: a refusal stops every process.
  Filesystems without ``flock`` (some network mounts): a pid-file fallback, stale when that pid is not alive on
  this host.
* :func:`check_kind`: a folder holds a single run (``config.json`` at its top) or a comparison (runs in
  subfolders, its own plots and ``comparison.json`` beside them), never both; the other kind is refused before
  anything is written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: the pid-file fallback
    fcntl = None

LOCK_NAME = ".lock"
# files that make a folder a folder of runs (a models=... comparison, the transformer's ablation)
GROUP_FILES = ("comparison.json", "ablation.json")


class RunDirError(ValueError):
    """A run folder that cannot be used as asked (another kind of run, in use, no readable checkpoint, ...)."""


# --- atomic files --------------------------------------------------------------------------------------------------
def atomic_write_text(path: Path | str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (see the module docstring)."""
    path = Path(path)
    data = text.encode()
    with contextlib.suppress(OSError):
        if path.read_bytes() == data:
            return
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_json(path: Path | str, obj) -> None:
    """``json.dumps(obj, indent=1)`` (numpy scalars as floats) written by :func:`atomic_write_text`."""
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def copy_json(src: Path | str, dst: Path | str) -> None:
    """Copy a JSON result file atomically (publishing runs into ``experiments/results``)."""
    atomic_write_text(dst, Path(src).read_text())


# --- the metrics log -----------------------------------------------------------------------------------------------
def read_metrics(path: Path | str) -> list[dict]:
    """The records of a ``metrics.jsonl`` ([] when it does not exist); a torn last line is dropped with a warning."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as err:
            if n == len(lines):
                warnings.warn(f"dropped the torn last line of {path} (a run stopped while writing it): {line[:80]!r}",
                              stacklevel=2)
                continue
            raise RunDirError(f"{path} line {n} is not JSON ({err}): {line[:80]!r}; only a torn last line is "
                              "repaired automatically. Fix or delete that line, then rerun.") from None
    return records


# --- one kind of run per folder ------------------------------------------------------------------------------------
def runs_inside(out: Path | str) -> list[str]:
    """Names of the subfolders of ``out`` that are runs (hold a config.json) or rows of runs over seeds (hold
    ``seed<k>/config.json``)."""
    out = Path(out)
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir() if p.is_dir() and (
        (p / "config.json").is_file() or any(s.name.startswith("seed") and (s / "config.json").is_file()
                                             for s in p.iterdir() if s.is_dir())))


def check_kind(out: Path | str, comparison: bool) -> None:
    """Refuse ``out`` when it holds the other kind of run: a comparison (``comparison=True``: runs in subfolders)
    into a single run's folder, or a single run into a folder of runs. Reads only."""
    out = Path(out)
    if comparison:
        if (out / "config.json").is_file():
            raise RunDirError(f"{out} holds a single run (its config.json); a comparison writes its runs into "
                              "subfolders and its own plots and comparison.json beside them, over that run's. "
                              "Use another --out.")
        return
    inside = runs_inside(out)
    group = [f for f in GROUP_FILES if (out / f).is_file()]
    if inside or group:
        where = f"runs in {', '.join(n + '/' for n in inside)}" if inside else ", ".join(group)
        raise RunDirError(f"{out} holds a comparison ({where}); a single run there would write its files among "
                          "them. Use another --out (or the comparison's own models=... to rerun it).")


# --- the lock ------------------------------------------------------------------------------------------------------
_HELD: dict[str, list] = {}  # resolved folder -> [fd, depth]


def _holder(text: str) -> tuple[int | None, str]:
    parts = text.split()
    try:
        return int(parts[0]), parts[1] if len(parts) > 1 else "?"
    except (IndexError, ValueError):
        return None, "?"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _in_use(out: Path, text: str) -> RunDirError:
    pid, host = _holder(text)
    who = f"process {pid} on {host}" if pid is not None else "another process"
    return RunDirError(f"{out} is in use by {who} (lock file {out / LOCK_NAME}); wait for that run to end, or use "
                       "another --out")


def _read_fd(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 4096).decode(errors="replace")


def _acquire(out: Path) -> None:
    key = str(out.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    me = f"{os.getpid()} {socket.gethostname()}\n"
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is None:
                raise OSError(errno.ENOLCK, "no flock")
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            text = _read_fd(fd)
            os.close(fd)
            raise _in_use(out, text) from None
        except OSError as err:
            if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
                os.close(fd)
                raise
            _acquire_pidfile(out, fd, me)  # closes fd
            _HELD[key] = [None, 1]
            return
        # the previous holder may have removed the file between our open and our flock: lock the current file
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    previous = _read_fd(fd)
    pid, host = _holder(previous)
    if pid is not None and pid != os.getpid():
        warnings.warn(f"{out}: took over the stale lock of process {pid} on {host} (it ended without releasing it)",
                      stacklevel=3)
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, me.encode())
    os.fsync(fd)
    _HELD[key] = [fd, 1]


def _acquire_pidfile(out: Path, fd: int, me: str) -> None:
    """No flock here: the lock is the pid in the file, stale when that process is gone (checked on this host)."""
    try:
        text = _read_fd(fd)
        pid, host = _holder(text)
        if pid is not None and pid != os.getpid():
            if host != socket.gethostname() or _alive(pid):
                raise _in_use(out, text)
            warnings.warn(f"{out}: took over the stale lock of process {pid} (no longer running)", stacklevel=4)
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, me.encode())
    finally:
        os.close(fd)


def _release(out: Path) -> None:
    key = str(out.resolve())
    entry = _HELD.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1]:
        return
    del _HELD[key]
    with contextlib.suppress(OSError):
        (out / LOCK_NAME).unlink()  # while still holding it: a waiting process re-checks the inode
    if entry[0] is not None:
        os.close(entry[0])


@contextlib.contextmanager
def hold(out: Path | str) -> Iterator[Path]:
    """Hold ``out``'s lock for the body (creating ``out``); raises :class:`RunDirError` when another run holds it.

    In a multi-process run (``jax.process_count() > 1``) process 0 takes the lock and broadcasts the outcome;
    every process must call this at the same point."""
    out = Path(out)
    import jax

    procs, main = jax.process_count(), jax.process_index() == 0
    error = None
    if main:
        try:
            _acquire(out)
        except RunDirError as err:
            error = err
    if procs > 1:
        import numpy as np
        from jax.experimental import multihost_utils

        ok = bool(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not ok and error is None:
            error = RunDirError(f"{out}: process 0 of this run could not take the run folder's lock (see its error)")
    if error is not None:
        raise error
    try:
        yield out
    finally:
        if main:
            _release(out)
