"""Files between stages: atomic directory writes (also under SIGKILL), manifests, schema checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from harness import dead_pid

from pipeline import atomic, io
from pipeline.atomic import atomic_dir, atomic_file, clean_stale
from pipeline.io import MANIFEST, DataError, check_schema, read_manifest, read_table, write_tables

REPO = Path(__file__).resolve().parents[2]


def table(value: int, rows: int = 5) -> pl.DataFrame:
    return pl.DataFrame({"id": list(range(rows)), "v": [value] * rows})


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-")))


# --- atomic_dir ---------------------------------------------------------------------------


def test_atomic_dir_publishes_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".tmp-out-")
        (tmp / "a.txt").write_text("hello")
        assert not target.exists()  # nothing is visible at the target while writing
    assert (target / "a.txt").read_text() == "hello"
    assert leftovers(tmp_path) == []


def test_atomic_dir_leaves_no_target_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(target) as tmp:
        (tmp / "half.parquet").write_bytes(b"PAR1")
        raise RuntimeError("boom")
    assert not target.exists()
    assert leftovers(tmp_path) == []


def test_atomic_dir_keeps_the_previous_output_when_the_block_raises(tmp_path: Path) -> None:
    target = tmp_path / "out"
    write_tables(target, {"t": table(1)}, config_digest="a")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "t.parquet").write_bytes(b"garbage")
        raise RuntimeError("boom")
    assert read_table(target, "t").collect()["v"].to_list() == [1] * 5
    assert leftovers(tmp_path) == []


def test_replacing_an_existing_output(tmp_path: Path) -> None:
    target = tmp_path / "out"
    write_tables(target, {"t": table(1), "gone": table(0)}, config_digest="a")
    write_tables(target, {"t": table(2, rows=3)}, config_digest="b")
    assert read_table(target, "t").collect()["v"].to_list() == [2, 2, 2]
    manifest = read_manifest(target)
    assert manifest["config_hash"] == "b"
    assert manifest["tables"] == {"t": {"rows": 3, "schema": {"id": "Int64", "v": "Int64"}}}
    # the replaced directory is gone entirely: no table of the old version survives
    assert not (target / "gone.parquet").exists()
    assert leftovers(tmp_path) == []


def test_stale_tmp_of_the_same_name_is_cleaned(tmp_path: Path) -> None:
    stale_dir = tmp_path / ".tmp-out-deadbeef"  # named before temps carried their owner's pid
    stale_dir.mkdir()
    (stale_dir / "t.parquet").write_bytes(b"partial")
    stale_file = tmp_path / ".tmp-out-cafebabe"
    stale_file.write_bytes(b"partial")
    dead = tmp_path / f".tmp-out-{dead_pid()}-0badf00d"
    dead.mkdir()
    other = tmp_path / ".tmp-other-deadbeef"  # another output's write in progress: untouched
    other.mkdir()
    longer = tmp_path / f".tmp-out-x-{dead_pid()}-0badf00d"  # of the target `out-x`: untouched
    longer.mkdir()
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "x").write_text("x")
    assert not stale_dir.exists() and not stale_file.exists() and not dead.exists()
    assert other.exists() and longer.exists()


def test_temps_of_a_live_writer_survive_another_writers_cleanup(tmp_path: Path) -> None:
    """Two runs writing one output: the second's start-up cleanup leaves the first's temp."""
    target = tmp_path / "out"
    with atomic_dir(target) as first:
        assert str(os.getpid()) in first.name
        (first / "t.parquet").write_bytes(b"being written")
        with atomic_dir(target) as second:  # clean_stale runs here; `first` is ours, alive
            (second / "v").write_text("second")
        assert (first / "t.parquet").read_bytes() == b"being written"
        (first / "v").write_text("first")
    assert (target / "v").read_text() == "first"  # the last to finish is published, whole
    assert leftovers(tmp_path) == []


def test_a_failed_swap_puts_the_previous_output_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error between `target -> .old-*` and `.tmp-* -> target` (the two-rename swap of a
    system without an exchange) loses nothing."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "out"
    write_tables(target, {"t": table(1)}, config_digest="a")
    real_rename = os.rename
    calls = []

    def fail_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise OSError("disk gone")
        real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", fail_on_second)
    with pytest.raises(OSError, match="disk gone"):
        write_tables(target, {"t": table(2)}, config_digest="b")
    monkeypatch.setattr(atomic.os, "rename", real_rename)
    assert Path(calls[0][1]).name.startswith(".old-out-")
    assert read_table(target, "t").collect()["v"].to_list() == [1] * 5
    assert leftovers(tmp_path) == []


def test_a_swap_interrupted_by_a_crash_is_restored(tmp_path: Path) -> None:
    """A process killed between the two renames leaves `.old-*` and no target: the next
    write's cleanup renames it back, but never a live writer's, which is mid-swap."""
    target = tmp_path / "out"
    write_tables(target, {"t": table(1)}, config_digest="a")
    live = tmp_path / f".old-out-{os.getpid()}-0badf00d"
    os.rename(target, live)
    clean_stale(tmp_path, "out")
    assert not target.exists() and live.exists()  # its owner (this process) may finish it
    dead = tmp_path / f".old-out-{dead_pid()}-0badf00d"
    os.rename(live, dead)
    clean_stale(tmp_path, "out")
    assert read_table(target, "t").collect()["v"].to_list() == [1] * 5
    assert leftovers(tmp_path) == []


def test_a_rewrite_swaps_the_folders_in_one_step(tmp_path: Path, monkeypatch) -> None:
    """Where the system can exchange two paths, the target is never missing: no rename of the
    target aside happens, and the old version goes."""
    target = tmp_path / "out"
    write_tables(target, {"t": table(1)}, config_digest="a")
    renames = []
    real_rename = os.rename
    monkeypatch.setattr(
        atomic.os, "rename", lambda a, b: (renames.append((a, b)), real_rename(a, b))
    )
    write_tables(target, {"t": table(2)}, config_digest="b")
    assert renames == []
    assert read_table(target, "t").collect()["v"].to_list() == [2] * 5
    assert leftovers(tmp_path) == []


def test_two_processes_writing_one_output_never_crash(tmp_path: Path) -> None:
    """Without any lock, concurrent writers of one target each publish a whole version."""
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import polars as pl
        from pipeline.io import write_tables
        for i in range(15):
            frame = pl.DataFrame({"v": [int(sys.argv[2])] * 1000})
            write_tables(Path(sys.argv[1]), {"t": frame}, config_digest=sys.argv[2])
        """
    )
    target = tmp_path / "out"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(target), str(i)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    manifest = read_manifest(target)
    values = read_table(target, "t").collect()["v"].unique().to_list()
    assert values == [int(manifest["config_hash"])]
    assert leftovers(tmp_path) == []


# --- SIGKILL mid-write ---------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys, time
    from collections.abc import Mapping
    from pathlib import Path
    import polars as pl
    from pipeline.io import write_tables

    class Stalling(Mapping):
        # the first table is written, then the writer stalls before the second
        def __init__(self, value):
            self.frames = {
                "first": pl.DataFrame({"v": [value] * 1000}),
                "second": pl.DataFrame({"v": [value] * 1000}),
            }
        def __getitem__(self, key):
            return self.frames[key]
        def __iter__(self):
            return iter(self.frames)
        def __len__(self):
            return len(self.frames)
        def items(self):
            for i, kv in enumerate(self.frames.items()):
                if i == 1:
                    print("ready", flush=True)
                    time.sleep(300)
                yield kv

    write_tables(Path(sys.argv[1]), Stalling(int(sys.argv[2])), config_digest="killed")
    """
)


def kill_mid_write(target: Path, value: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(target), str(value)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read()
        # it really is mid-write: a temporary directory holds the first table only
        tmps = list(target.parent.glob(f".tmp-{target.name}-*"))
        assert len(tmps) == 1 and (tmps[0] / "first.parquet").is_file()
        assert not (tmps[0] / MANIFEST).exists()
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_mid_write_leaves_no_output(tmp_path: Path) -> None:
    target = tmp_path / "out"
    kill_mid_write(target, 2)
    assert not target.exists()
    with pytest.raises(DataError):
        read_table(target, "first")
    # the next run cleans the crashed write and publishes normally
    write_tables(target, {"first": table(3)}, config_digest="c")
    assert read_table(target, "first").collect()["v"].unique().to_list() == [3]
    assert leftovers(tmp_path) == []


def test_sigkill_mid_write_keeps_the_previous_complete_output(tmp_path: Path) -> None:
    target = tmp_path / "out"
    write_tables(target, {"first": table(1), "second": table(1)}, config_digest="a")
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    kill_mid_write(target, 2)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert read_manifest(target)["config_hash"] == "a"
    for name in ("first", "second"):
        assert read_table(target, name).collect()["v"].unique().to_list() == [1]


# --- manifests, reads and schema checks ----------------------------------------------------


def test_manifest_records_schema_rows_inputs_and_provenance(tmp_path: Path) -> None:
    upstream = tmp_path / "up"
    write_tables(upstream, {"t": table(1)}, config_digest="u")
    lazy = table(4, rows=7).lazy().with_columns(pl.col("v").cast(pl.Int32))
    manifest = write_tables(
        tmp_path / "down",
        {"eager": table(1), "lazy": lazy},
        config_digest="cfg123",
        inputs={"up": upstream, "nothing": tmp_path / "absent"},
        extra={"note": "x"},
        files={"spec.json": b"{}"},
    )
    on_disk = json.loads((tmp_path / "down" / MANIFEST).read_text())
    assert on_disk == manifest
    assert manifest["tables"]["eager"]["rows"] == 5
    assert manifest["tables"]["lazy"] == {"rows": 7, "schema": {"id": "Int64", "v": "Int32"}}
    assert manifest["inputs"]["up"] == io.file_digest(upstream / MANIFEST)
    assert manifest["inputs"]["nothing"] == "missing"
    assert manifest["config_hash"] == "cfg123"
    assert manifest["code_version"]
    assert datetime.fromisoformat(manifest["created_at"]).tzinfo is not None
    assert manifest["note"] == "x"
    assert (tmp_path / "down" / "spec.json").read_bytes() == b"{}"
    assert set(manifest["files"]) == {"spec.json"}


def test_input_digest_changes_when_the_input_is_rewritten(tmp_path: Path) -> None:
    upstream = tmp_path / "up"
    write_tables(upstream, {"t": table(1)}, config_digest="u")
    first = io.input_digest(upstream)
    write_tables(upstream, {"t": table(2)}, config_digest="u2")
    assert io.input_digest(upstream) != first


def test_read_table_without_manifest_is_a_data_error(tmp_path: Path) -> None:
    folder = tmp_path / "raw"
    folder.mkdir()
    table(1).write_parquet(folder / "ads.parquet")  # a table alone is not a finished output
    with pytest.raises(DataError, match=r"no _manifest\.json"):
        read_table(folder, "ads")
    with pytest.raises(DataError, match="no _manifest"):
        read_table(tmp_path / "never_written", "ads")


def test_read_table_of_a_table_not_in_the_manifest(tmp_path: Path) -> None:
    write_tables(tmp_path / "raw", {"ads": table(1)}, config_digest="a")
    with pytest.raises(DataError, match="table 'users' not in"):
        read_table(tmp_path / "raw", "users")


def test_read_table_checks_the_schema(tmp_path: Path) -> None:
    write_tables(tmp_path / "raw", {"ads": table(1)}, config_digest="a")
    lf = read_table(tmp_path / "raw", "ads", {"id": pl.Int64, "v": pl.Int64})
    assert lf.collect().height == 5
    with pytest.raises(DataError, match=r"ads\.parquet: schema mismatch"):
        read_table(tmp_path / "raw", "ads", {"id": pl.Int64, "v": pl.String})


def test_check_schema_lists_every_problem() -> None:
    frame = pl.DataFrame(
        {
            "ad_id": [1],
            "price": ["1.0"],  # wrong type
            "click": [1],  # Int64, expected Int8
            "keywords": [["a", "b"]],
        }
    )
    expected = {
        "ad_id": pl.Int64,
        "price": pl.Float64,
        "click": pl.Int8,
        "keywords": pl.List(pl.String),
        "title": pl.String,  # missing
        "ts": pl.Datetime("us"),  # missing
    }
    with pytest.raises(DataError) as info:
        check_schema(frame.lazy(), expected, "ads.parquet")
    message = str(info.value)
    assert message.startswith("ads.parquet: schema mismatch")
    assert "missing column 'title'" in message
    assert "missing column 'ts'" in message
    assert "column 'price' is String, expected Float64" in message
    assert "column 'click' is Int64, expected Int8" in message
    assert "'ad_id'" not in message and "'keywords'" not in message
    assert message.count(";") == 3  # four problems, one message line
    assert "\n" not in message


def test_check_schema_passes_a_matching_frame() -> None:
    frame = pl.DataFrame({"a": [1], "b": [["x"]]})
    check_schema(frame, {"a": pl.Int64, "b": pl.List(pl.String)}, "f")


def test_atomic_file_replaces_content(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.json"
    atomic_file(target, b"1")
    atomic_file(target, b"2")
    assert target.read_bytes() == b"2"
    assert [p.name for p in target.parent.iterdir()] == ["x.json"]


# --- unreadable inputs ---------------------------------------------------------------------


def test_a_truncated_parquet_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    write_tables(tmp_path / "raw", {"ads": table(1, rows=500)}, config_digest="a")
    path = tmp_path / "raw" / "ads.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="unreadable Parquet") as info:
        read_table(tmp_path / "raw", "ads")
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"ads\.parquet: unreadable Parquet"):
        read_table(tmp_path / "raw", "ads")


def test_a_table_swapped_for_another_is_a_data_error(tmp_path: Path) -> None:
    write_tables(tmp_path / "raw", {"ads": table(1, rows=5)}, config_digest="a")
    table(1, rows=7).write_parquet(tmp_path / "raw" / "ads.parquet")
    with pytest.raises(DataError, match="7 rows where its manifest says 5"):
        read_table(tmp_path / "raw", "ads")


@pytest.mark.parametrize(
    "content", [b'{"tables": ', b"\xff\xfe{}", b"[1, 2]"], ids=["cut", "not-utf8", "not-object"]
)
def test_an_unreadable_manifest_is_a_data_error(tmp_path: Path, content: bytes) -> None:
    write_tables(tmp_path / "raw", {"ads": table(1)}, config_digest="a")
    (tmp_path / "raw" / MANIFEST).write_bytes(content)
    with pytest.raises(DataError, match=r"raw/_manifest\.json: ") as info:
        read_manifest(tmp_path / "raw")
    assert "\n" not in str(info.value)


def test_frames_are_written_with_dictionary_pages_whatever_their_chunking(
    tmp_path: Path, monkeypatch
) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    monkeypatch.setattr(io, "ROW_GROUP_ROWS", 300)
    rng = np.random.default_rng(0)
    table = pl.DataFrame(
        {
            "ad": rng.integers(0, 20, 1000),
            "pc": rng.normal(size=20).astype(np.float32)[rng.integers(0, 20, 1000)],
            "x": rng.normal(size=1000).astype(np.float32),
            "split": rng.choice(["train", "test"], 1000),
        }
    )

    def chunked(size: int) -> io.Frames:
        return io.Frames(lambda: (table.slice(s, size) for s in range(0, 1000, size)))

    written = {}
    for size in (1000, 7, 250):
        write_tables(tmp_path / f"by{size}", {"t": chunked(size)}, config_digest="c")
        written[size] = (tmp_path / f"by{size}" / "t.parquet").read_bytes()
    assert written[7] == written[1000] == written[250]
    out = tmp_path / "by7"
    assert read_table(out, "t").collect().equals(table)
    assert read_manifest(out)["tables"]["t"]["rows"] == 1000
    meta = pq.ParquetFile(out / "t.parquet").metadata
    assert [meta.row_group(g).num_rows for g in range(meta.num_row_groups)] == [300, 300, 300, 100]
    assert "RLE_DICTIONARY" in meta.row_group(0).column(1).encodings  # a float column too
    # a split without rows is still a table, with the schema
    none = io.Frames(lambda: (table.slice(s, 100).filter(pl.col("split") == "x") for s in (0, 1)))
    write_tables(tmp_path / "none", {"t": none}, config_digest="c")
    assert read_table(tmp_path / "none", "t").collect().schema == table.schema
    with pytest.raises(ValueError, match="no frame"):
        write_tables(tmp_path / "nothing", {"t": io.Frames(lambda: iter(()))}, config_digest="c")
