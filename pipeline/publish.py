"""Atomic, versioned publishing of the bid table for the ad server (used by `export`).

`exports` (`Layout.exports`) is a symlink to `export-versions/<version>/` (under
`Layout.export_versions`) holding `bid_weights.parquet`,
`bid_weights.csv` and `_manifest.json` (row count, checksums). A new version is built in a
temporary directory, fsynced and renamed into place, then a new link is `os.replace`d over
`exports` in one `rename(2)`: a reader who resolves `exports/` sees the old three files or the new
three, never a mix, and a process killed at any point leaves one or the other.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from pipeline.atomic import atomic_dir, crash_point, fsync_dir, owned_name, owner_dead
from pipeline.io import MANIFEST, DataError, read_manifest

TABLE_FILE = "bid_weights.parquet"
CSV_FILE = "bid_weights.csv"


def published_manifest(exports: Path) -> dict[str, Any] | None:
    """The manifest of the published table, or None when nothing is published."""
    return read_manifest(exports) if (Path(exports) / MANIFEST).is_file() else None


def read_published(exports: Path) -> tuple[pl.DataFrame, dict[str, Any]] | None:
    """The published table and its manifest (None when nothing is published), checked.

    `exports` is resolved once, so the table and the manifest come from the same version.
    """
    if not Path(exports).exists():
        return None
    real = Path(os.path.realpath(exports))
    manifest = read_manifest(real)
    data = (real / TABLE_FILE).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise DataError(f"{real / TABLE_FILE}: checksum differs from its manifest")
    table = pl.read_parquet(io.BytesIO(data))
    if table.height != manifest.get("rows"):
        raise DataError(
            f"{real / TABLE_FILE}: {table.height} rows, manifest says {manifest.get('rows')}"
        )
    return table, manifest


def _clean_stale(exports: Path, versions: Path) -> None:
    """Drop leftovers of killed exports: unfinished versions and unswapped links (those of an
    export still running are its own)."""
    for tmp in versions.glob(".tmp-*"):
        if owner_dead(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    prefix = f".tmp-{exports.name}-"
    for link in exports.parent.glob(f"{prefix}*"):
        if owner_dead(link, prefix):
            link.unlink(missing_ok=True)


def _prune(versions: Path, current: str, keep: int) -> None:
    done = [p for p in versions.iterdir() if p.is_dir() and not p.name.startswith(".")]
    done.sort(key=lambda p: (p.stat().st_mtime, p.name))
    for old in done[: max(len(done) - keep, 0)]:
        if old.name != current:
            shutil.rmtree(old, ignore_errors=True)


def publish(
    table: pl.DataFrame, manifest: dict[str, Any], exports: Path, versions: Path, keep: int = 5
) -> Path:
    """Write a new version directory under `versions`, then point the link `exports` at it in
    one rename.

    The version is built by `atomic_dir` (parquet, csv, then the manifest with both checksums;
    fsynced, renamed to `<versions>/<version>/`); a symlink to it (relative, so the data root
    can move) is created beside `exports` and `os.replace`d over it. A kill before the replace
    leaves the old link (old table); after, the new one. Returns the version directory.
    """
    versions.mkdir(parents=True, exist_ok=True)
    _clean_stale(exports, versions)
    final = versions / manifest["version"]
    buf = io.BytesIO()
    table.write_parquet(buf)
    data, csv = buf.getvalue(), table.write_csv().encode()
    with atomic_dir(final) as tmp:
        (tmp / TABLE_FILE).write_bytes(data)
        crash_point("export:parquet")
        (tmp / CSV_FILE).write_bytes(csv)
        manifest = manifest | {
            "rows": table.height,
            "sha256": hashlib.sha256(data).hexdigest(),
            "csv_sha256": hashlib.sha256(csv).hexdigest(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
        crash_point("export:files")
    fsync_dir(versions)
    crash_point("export:version")
    if exports.exists() and not exports.is_symlink():  # a table from before versioning
        os.rename(exports, versions / f"legacy-{uuid.uuid4().hex[:8]}")
    link = owned_name(exports)
    os.symlink(os.path.relpath(final, exports.parent), link)
    os.replace(link, exports)
    fsync_dir(exports.parent)
    crash_point("export:linked")
    _prune(versions, final.name, keep)
    return final
