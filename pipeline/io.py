"""Files between stages: Parquet tables plus `_manifest.json`, written atomically.

A stage output is a directory. It is built in `.tmp-<name>-<pid>-<uuid>/` beside the target,
every file is fsynced, the manifest is written last, and the directory is renamed into place (the
previous one moved aside to `.old-<name>-<pid>-<uuid>/` for the moment of the swap). A crashed job
leaves only such folders, which the next write of the same name removes (or, for an `.old-*` of an
interrupted swap, renames back) once their owner process is dead; a live owner's are left alone.
Readers refuse a directory without a manifest and a Parquet file whose footer does not read.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.lock import pid_alive

log = logging.getLogger(__name__)

MANIFEST = "_manifest.json"
CRASH_ENV = "ADCTR_CRASH_AT"  # the crash tests name where a stage SIGKILLs itself


class DataError(ValueError):
    """Bad input data; the message is one line naming the file, column and row count."""


def code_version() -> str:
    """`git describe` of the working tree when available, else the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        from importlib.metadata import version

        return version("adctr")


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    for tmp in parent.glob(f".tmp-{name}-*"):
        if owner_dead(tmp, f".tmp-{name}-"):
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


def schema_of(frame: pl.DataFrame | pl.LazyFrame) -> dict[str, str]:
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    return {name: str(dtype) for name, dtype in schema.items()}


def write_tables(
    target: Path,
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
    *,
    config_digest: str,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """Write `<name>.parquet` for each table (+ raw `files`) and the manifest, atomically."""
    with atomic_dir(target) as tmp:
        return write_tables_into(
            tmp, tables, config_digest=config_digest, inputs=inputs, extra=extra, files=files
        )


def write_tables_into(
    directory: Path,
    tables: Mapping[str, pl.DataFrame | pl.LazyFrame],
    *,
    config_digest: str,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
) -> dict[str, Any]:
    """`write_tables` into a directory the caller publishes (an `atomic_dir` of its own, for
    outputs renamed into place together)."""
    rows: dict[str, int] = {}
    schemas: dict[str, dict[str, str]] = {}
    for name, frame in tables.items():
        out = Path(directory) / f"{name}.parquet"
        if isinstance(frame, pl.LazyFrame):
            frame.sink_parquet(out, engine="streaming")
            rows[name] = pl.scan_parquet(out).select(pl.len()).collect().item()
        else:
            frame.write_parquet(out)
            rows[name] = frame.height
        schemas[name] = schema_of(pl.scan_parquet(out))
    for name, data in (files or {}).items():
        (Path(directory) / name).write_bytes(data)
    manifest = {
        "tables": {n: {"rows": rows[n], "schema": schemas[n]} for n in tables},
        "files": {n: hashlib.sha256(d).hexdigest() for n, d in (files or {}).items()},
        "inputs": {k: input_digest(Path(p)) for k, p in (inputs or {}).items()},
        "config_hash": config_digest,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def write_file_manifest(
    directory: Path,
    *,
    config_digest: str,
    inputs: Mapping[str, Path] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest of a directory of non-table files (models, reports): every file's sha256."""
    files = {
        str(p.relative_to(directory)): file_digest(p)
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "tables": {},
        "files": files,
        "inputs": {k: input_digest(Path(p)) for k, p in (inputs or {}).items()},
        "config_hash": config_digest,
        "code_version": code_version(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **dict(extra or {}),
    }
    (Path(directory) / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def input_digest(path: Path) -> str:
    """The digest of an input: its manifest's digest for a stage directory, else the file's."""
    if path.is_dir():
        man = path / MANIFEST
        return file_digest(man) if man.exists() else "missing"
    return file_digest(path) if path.exists() else "missing"


def read_manifest(directory: Path) -> dict[str, Any]:
    man = Path(directory) / MANIFEST
    if not man.is_file():
        raise DataError(
            f"{directory}: no {MANIFEST} (stage output missing or incomplete); "
            "run the stage that writes it first"
        )
    try:
        manifest = json.loads(man.read_text())
    except (OSError, ValueError) as exc:  # ValueError: bad JSON or bytes that are not UTF-8
        raise DataError(
            f"{man}: unreadable ({_one_line(exc)}); rerun the stage that writes it"
        ) from None
    if not isinstance(manifest, dict):
        raise DataError(f"{man}: not a manifest (a JSON object); rerun the stage that writes it")
    return manifest


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def check_parquet(
    path: Path, rows: int | None = None, hint: str = "rerun the stage that writes it"
) -> None:
    """Raise a DataError naming `path` (and ending in `hint`) unless its Parquet footer reads
    (a truncated or foreign file's does not) and, given `rows`, records that many rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        found = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: unreadable Parquet ({_one_line(exc)}); {hint}") from None
    if rows is not None and found != rows:
        raise DataError(f"{path}: {found:,} rows where its manifest says {rows:,}; {hint}")


def check_schema(
    frame: pl.DataFrame | pl.LazyFrame, expected: Mapping[str, pl.DataType], where: str
) -> None:
    """Raise a DataError listing every missing column and every column of the wrong type."""
    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    problems = []
    for col, dtype in expected.items():
        if col not in schema:
            problems.append(f"missing column '{col}' ({dtype})")
        elif schema[col] != dtype and not (dtype == pl.List and isinstance(schema[col], pl.List)):
            problems.append(f"column '{col}' is {schema[col]}, expected {dtype}")
    if problems:
        raise DataError(f"{where}: schema mismatch: " + "; ".join(problems))


def read_table(
    directory: Path, name: str, expected: Mapping[str, pl.DataType] | None = None
) -> pl.LazyFrame:
    """Scan `<directory>/<name>.parquet` after checking the manifest and (optionally) schema."""
    manifest = read_manifest(directory)
    path = Path(directory) / f"{name}.parquet"
    if name not in manifest.get("tables", {}) or not path.is_file():
        raise DataError(f"{path}: table '{name}' not in {directory / MANIFEST}")
    check_parquet(path, manifest["tables"][name].get("rows"))
    lf = pl.scan_parquet(path)
    if expected:
        check_schema(lf, expected, str(path))
    return lf
