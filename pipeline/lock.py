"""One run of a stage per experiment at a time: `fcntl.flock` locks in `<data>/<exp>/.locks/`.

A stage holds its own lock exclusively and the locks of the stages whose outputs it reads
shared: a second `train` waits for the first, and an `evaluate` started during a `train` waits
for it rather than read one model of the old run and one of the new. Locks are taken in
pipeline order, so two stages never wait for each other. The kernel drops a `flock` when its
process dies, `kill -9` included, so a crash leaves no stale lock. Each holder writes
`<lock>.<pid>.json` (pid, stage, since, host) beside the lock file, which a waiter reads to say
whom it waits for, and removes it on release; the next holder removes those of dead processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_DIR = ".locks"
DEFAULT_TIMEOUT_S = 3600.0  # the longest a stage waits for another before it gives up
# stages that write the same output share one lock
LOCK_OF = {"generate": "raw", "ingest": "raw"}
# the locks a stage holds shared: the stages whose outputs it reads (ARCHITECTURE.md's table)
READS = {
    "embed": ("raw",),
    "features": ("raw", "embed"),
    "train": ("features",),
    "tune": ("features",),
    "evaluate": ("raw", "features", "train"),
    "export": ("raw", "features", "train", "evaluate"),
    "replay": ("raw", "features", "train", "evaluate"),
}
ORDER = ("raw", "embed", "features", "train", "tune", "evaluate", "export", "replay")


class LockError(RuntimeError):
    """A stage could not take its locks; the message is one line."""


class LockTimeout(LockError):
    """Another run held a lock for longer than the wait allows."""


def pid_alive(pid: int) -> bool:
    """True if process `pid` exists on this host and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:  # a killed child nobody has reaped yet still answers kill(0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def plan(stage: str) -> list[tuple[str, bool]]:
    """The locks `stage` takes as (name, shared), in the one global order."""
    own = LOCK_OF.get(stage, stage)
    wanted = {name: True for name in READS.get(stage, ()) if name != own} | {own: False}
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(wanted.items(), key=lambda kv: (rank.get(kv[0], len(ORDER)), kv[0]))


def holders(lock: Path) -> list[dict]:
    """What the live holders of `lock` wrote about themselves."""
    found = []
    for info in sorted(lock.parent.glob(f"{lock.stem}.*.json")):
        try:
            record = json.loads(info.read_text())
            alive = pid_alive(int(record["pid"]))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # being written or removed right now
        if alive:
            found.append(record)
    return found


def describe(records: list[dict]) -> str:
    if not records:
        return "another process"
    return ", ".join(
        f"pid {r['pid']} ({r.get('stage', '?')}) since {r.get('since', '?')}" for r in records
    )


@contextlib.contextmanager
def stage_lock(
    root: Path, stage: str, timeout_s: float = DEFAULT_TIMEOUT_S, poll_s: float = 0.2
) -> Iterator[None]:
    """Hold the locks of `stage` on the experiment directory `root` for the block.

    Waits while another run holds one (one log line naming it), and raises LockTimeout when
    it still does after `timeout_s`.
    """
    directory = Path(root) / LOCK_DIR
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LockError(f"{directory}: cannot create the lock folder ({exc.strerror})") from None
    deadline = time.monotonic() + timeout_s
    with contextlib.ExitStack() as stack:
        for name, shared in plan(stage):
            lock = directory / f"{name}.lock"
            stack.enter_context(_hold(lock, stage, shared, deadline, poll_s))
        yield


@contextlib.contextmanager
def _hold(lock: Path, stage: str, shared: bool, deadline: float, poll_s: float) -> Iterator[None]:
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    info = lock.with_name(f"{lock.stem}.{os.getpid()}.json")
    try:
        _acquire(fd, lock, stage, shared, deadline, poll_s)
        _drop_dead_records(lock)
        record = {
            "pid": os.getpid(),
            "stage": stage,
            "mode": "shared" if shared else "exclusive",
            "since": datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": socket.gethostname(),
        }
        info.write_text(json.dumps(record))
        try:
            yield
        finally:
            info.unlink(missing_ok=True)
    finally:
        os.close(fd)  # closing the last descriptor releases the flock


def _acquire(fd: int, lock: Path, stage: str, shared: bool, deadline: float, poll_s: float):
    mode = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB
    announced, started = False, time.monotonic()
    while True:
        try:
            fcntl.flock(fd, mode)
            if announced:
                log.info("%s: got the %s lock", stage, lock.stem)
            return
        except BlockingIOError:
            pass
        now = time.monotonic()
        if now >= deadline:
            raise LockTimeout(
                f"{stage}: {lock} still held by {describe(holders(lock))} after "
                f"{now - started:.0f}s; wait for it to finish or stop it"
            )
        found = holders(lock)
        if not announced and (found or now - started > 1.0):
            log.info("waiting for %s held by %s (%s)", lock.stem, describe(found), lock)
            announced = True
        time.sleep(poll_s)


def _drop_dead_records(lock: Path) -> None:
    """Remove the holder records that killed processes left behind."""
    for info in lock.parent.glob(f"{lock.stem}.*.json"):
        pid = info.name.removeprefix(f"{lock.stem}.").removesuffix(".json")
        if pid.isdigit() and not pid_alive(int(pid)):
            info.unlink(missing_ok=True)


@contextlib.contextmanager
def file_lock(path: Path, shared: bool = False) -> Iterator[None]:
    """A plain blocking `flock` on `path` (created) for the block: a shared resource's guard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
