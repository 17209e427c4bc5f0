"""The output directory of a run: one live run at a time, no silent overwrite, no leftover temp files.

* A lock file (``.npllm.lock``) held with ``flock`` for the whole run: a second run on the same directory is
  refused while the first lives, and a lock left by a killed run is stale by construction (the kernel
  releases ``flock`` when its process dies), so it never blocks anyone.  Where ``fcntl`` is missing
  (Windows) the file's pid is checked instead.
* A new run into a directory that already holds a checkpoint is refused unless ``--resume`` or
  ``--overwrite`` says what to do with it.
* Temporary files that a killed checkpoint write left behind are removed
  (:func:`npllm.checkpoint.remove_stale_temp_files`).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

from npllm.checkpoint import BEST_NAME, LATEST_NAME, remove_stale_temp_files
from npllm.errors import UsageError

LOCK_NAME = ".npllm.lock"
METRICS_NAME = "metrics.jsonl"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class OutDirLock:
    """Context manager: hold ``<out_dir>/.npllm.lock`` for the run; UsageError if another run holds it."""

    def __init__(self, out_dir: Path):
        self.path, self.handle = Path(out_dir) / LOCK_NAME, None

    def __enter__(self) -> "OutDirLock":
        try:
            self.handle = open(self.path, "a+", encoding="utf-8")
        except OSError as exc:
            raise UsageError("--out-dir", f"cannot write in {self.path.parent}: {exc.strerror}") from None
        try:
            import fcntl
        except ImportError:
            fcntl = None
        if fcntl is not None:
            try:
                fcntl.flock(self.handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                self.handle.seek(0)
                holder = self.handle.read().strip() or "?"
                self.handle.close()
                raise UsageError("--out-dir", f"{self.path.parent} is in use by another training run (pid "
                                              f"{holder}); wait for it or choose another --out-dir") from None
        else:
            self.handle.seek(0)
            holder = self.handle.read().strip()
            if holder.isdigit() and int(holder) != os.getpid() and _pid_alive(int(holder)):
                self.handle.close()
                raise UsageError("--out-dir", f"{self.path.parent} is in use by another training run (pid {holder})")
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            try:
                self.path.unlink()
            except OSError:
                pass
            self.handle.close()          # closing releases the flock
            self.handle = None


@contextmanager
def claim(out_dir, resume: bool, overwrite: bool):
    """Context: --out-dir created, locked for this run, checked against --resume/--overwrite and cleaned of
    temp files; → its Path.  UsageError (before anything is changed) when it cannot be used."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError("--out-dir", f"{out_dir} exists and is not a directory")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError("--out-dir", f"cannot create {out_dir}: {exc.strerror}") from None
    with OutDirLock(out_dir):
        if resume and not (out_dir / LATEST_NAME).is_file():
            raise UsageError("--resume", f"no checkpoint to resume from: {out_dir / LATEST_NAME} does not exist")
        if not resume and (out_dir / LATEST_NAME).exists() and not overwrite:
            raise UsageError("--out-dir", f"{out_dir} already holds a run ({LATEST_NAME}); continue it with "
                                          "--resume, replace it with --overwrite, or choose another --out-dir")
        remove_stale_temp_files(out_dir)
        if not resume:
            clear_previous_run(out_dir)          # --overwrite, or leftovers of a run that saved no checkpoint
        yield out_dir


def clear_previous_run(out_dir: Path) -> None:
    """A new run: remove a previous run's checkpoints and metrics so nothing of it is mistaken for this one."""
    for name in (LATEST_NAME, BEST_NAME, METRICS_NAME):
        try:
            (out_dir / name).unlink()
        except FileNotFoundError:
            pass
