"""Atomic writes: an output is built in a temporary folder or file beside its target, owned by
this process (`.tmp-<name>-<pid>-<uuid>`), fsynced, then put in the target's place in one step;
leftovers of dead writers are removed (and a target lost mid-swap restored) by the next write.
The crash tests kill a writer at the named points (`crash_point`)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import shutil
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

from pipeline.lock import pid_alive

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"  # a folder is published when it holds this file
CRASH_ENV = "ADCTR_CRASH_AT"  # the crash tests name where a stage SIGKILLs itself


def _fsync_tree(root: Path) -> None:
    for p in sorted(root.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (creations, renames) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def owned_name(target: Path, kind: str = "tmp") -> Path:
    """`.<kind>-<name>-<pid>-<uuid>` beside `target`: a temporary name owned by this process."""
    return target.parent / f".{kind}-{target.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


_OWNER = re.compile(r"(?:(\d+)-)?[0-9a-f]{8}")
_OWNER_TAIL = re.compile(r"-(?:(\d+)-)?[0-9a-f]{8}$")


def owner_dead(entry: Path, prefix: str | None = None) -> bool:
    """True if `entry` is `<prefix><pid>-<uuid>` of a dead process, or a `<prefix><uuid>` of a
    version that did not record its owner; False for a live owner or another target's name.
    Without `prefix`, any name ending in `-<pid>-<uuid>` or `-<uuid>` is judged by that end."""
    if prefix is None:
        found = _OWNER_TAIL.search(entry.name)
    else:
        found = _OWNER.fullmatch(entry.name.removeprefix(prefix))
    if found is None:
        return False
    return found.group(1) is None or not pid_alive(int(found.group(1)))


def clean_stale(parent: Path, name: str) -> None:
    """Remove dead writers' leftovers of `name`; restore a target lost mid-swap."""
    if not parent.is_dir():
        return
    target = parent / name
    for old in sorted(parent.glob(f".old-{name}-*")):
        if not owner_dead(old, f".old-{name}-"):
            continue  # a live writer's swap in progress
        if not target.exists() and (old / MANIFEST).exists():
            try:
                os.rename(old, target)
                log.warning("restored %s from an interrupted swap", target)
            except OSError as exc:  # another run restored or published it first
                log.debug("not restoring %s: %s", old, exc)
        else:
            shutil.rmtree(old, ignore_errors=True)
    for kind in ("tmp", "work"):  # temporaries of `atomic_dir` / `atomic_file`, `scratch_dir`
        for tmp in parent.glob(f".{kind}-{name}-*"):
            if not owner_dead(tmp, f".{kind}-{name}-"):
                continue
            shutil.rmtree(tmp, ignore_errors=True) if tmp.is_dir() else tmp.unlink(missing_ok=True)


def crash_point(name: str) -> None:
    """For the crash tests: SIGKILL this process when `name` is one of the comma-separated
    names in $ADCTR_CRASH_AT (never set outside tests)."""
    wanted = os.environ.get(CRASH_ENV)
    if wanted and name in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)


def _crash_at(target: Path, phase: str) -> None:
    """`<parent>/<name>:<phase>`, e.g. `small/features:written`, `models/neural:published`."""
    crash_point(f"{target.parent.name}/{target.name}:{phase}")


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a temporary directory that replaces `target` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent, target.name)
    tmp = owned_name(target)
    tmp.mkdir()
    try:
        yield tmp
        _fsync_tree(tmp)
        _crash_at(target, "written")
        _swap_in(tmp, target)
        _crash_at(target, "published")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(target: Path) -> Iterator[Path]:
    """Yield a scratch folder beside `target` (`.work-<name>-<pid>-<uuid>`) for a stage's
    intermediate files; removed when the block ends, and by the next write of `target` when
    a killed process left it behind."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent, target.name)
    work = owned_name(target, "work")
    work.mkdir()
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


_RENAME_EXCHANGE, _AT_FDCWD = 2, -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system or
    file system cannot, or `b` does not exist."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    done = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOENT, errno.EPERM, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(tmp: Path, target: Path, tries: int = 5) -> None:
    """Put `tmp` in `target`'s place. Where the system can, the two are exchanged in one step
    (a reader sees the old folder or the new one, never none) and the old one, now at `tmp`'s
    name, is deleted. Else the previous `target` is moved aside first and deleted after (a
    reader may find no folder for an instant; a kill then leaves the old one for the next run
    to restore).

    Another writer publishing the same target in between wins this round and is replaced in the
    next; a failure of any other kind puts the previous target back before it is raised.
    """
    if target.exists() and _exchange(tmp, target):
        _crash_at(target, "exchanged")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    for _ in range(tries):
        old = owned_name(target, "old")
        try:
            os.rename(target, old)
            _crash_at(target, "moved_aside")
        except FileNotFoundError:
            old = None  # nothing published yet (or another writer moved it aside)
        try:
            os.rename(tmp, target)
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                if old is not None:
                    shutil.rmtree(old, ignore_errors=True)
                continue
            if old is not None and not target.exists():
                os.rename(old, target)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise OSError(f"{target}: replaced by other writers {tries} times in a row; rerun")


def atomic_file(target: Path, data: bytes) -> None:
    """Write bytes to `target` atomically (temp file beside it, fsync, rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target.parent, target.name)
    tmp = owned_name(target)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
