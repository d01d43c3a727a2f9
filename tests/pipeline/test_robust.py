"""Two runs at once, killed runs and bad files: stage locks, owned temps, abandoned MLflow runs.

The CLI tests share one `small` raw dataset and one feature table (module fixture, text
features off so that no embedding is needed) and run stages as a user would."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from harness import REPO, dead_pid, stage_env

from pipeline.lock import LockTimeout, pid_alive, plan, stage_lock

FAST = ["--set", "features.text=false"]
TRAIN = [*FAST, "--set", 'train.models=["lightgbm"]', "--set", "lightgbm.num_boost_round=50"]


# --- locks ---------------------------------------------------------------------------------


def test_a_stage_locks_itself_and_reads_its_inputs_shared() -> None:
    assert plan("train") == [("features", True), ("train", False)]
    assert plan("generate") == plan("ingest") == [("raw", False)]  # one raw/ between them
    assert [name for name, _ in plan("export")] == [
        "raw",
        "features",
        "train",
        "evaluate",
        "export",
    ]
    assert plan("some_new_stage") == [("some_new_stage", False)]


def test_a_second_holder_waits_then_gives_up_naming_the_first(tmp_path: Path) -> None:
    with stage_lock(tmp_path, "train"):
        with pytest.raises(LockTimeout) as info, stage_lock(tmp_path, "train", timeout_s=0.5):
            pass
        message = str(info.value)
        assert f"held by pid {os.getpid()} (train) since " in message and "\n" not in message
        # readers of train's outputs wait for it too; readers of features do not
        with pytest.raises(LockTimeout), stage_lock(tmp_path, "evaluate", timeout_s=0.3):
            pass
        with stage_lock(tmp_path, "embed", timeout_s=0.3):
            pass
    with stage_lock(tmp_path, "export"), stage_lock(tmp_path, "replay", timeout_s=0.3):
        pass  # two readers of the same outputs share their locks
    assert sorted(p.name for p in (tmp_path / ".locks").iterdir() if p.suffix == ".json") == []


def test_a_killed_holder_leaves_no_lock(tmp_path: Path) -> None:
    code = textwrap.dedent(
        """
        import sys, time
        from pipeline.lock import stage_lock
        with stage_lock(sys.argv[1], "features"):
            print("held", flush=True)
            time.sleep(300)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "held"
        with (
            pytest.raises(LockTimeout, match=f"pid {proc.pid} "),
            stage_lock(tmp_path, "features", timeout_s=0.3),
        ):
            pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    with stage_lock(tmp_path, "features", timeout_s=5):
        records = [p.name for p in (tmp_path / ".locks").glob("features.*.json")]
        assert records == [f"features.{os.getpid()}.json"]  # the dead holder's record is gone


def test_a_lock_folder_that_cannot_be_made_is_one_line(tmp_path: Path, capsys) -> None:
    from pipeline.__main__ import main

    (tmp_path / "file").write_text("not a folder")
    code = main(["features", "--experiment", "small", "--set", f"data.root={tmp_path / 'file'}"])
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip() == f"error: {tmp_path / 'file' / 'small' / '.locks'}: cannot create " + (
        "the lock folder (Not a directory)"
    )


def test_stages_unwind_on_sigterm_and_sighup_but_keep_nohup() -> None:
    from pipeline import __main__ as cli

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with cli._signals_unwind():
            assert signal.getsignal(signal.SIGTERM) is cli._terminate
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN  # as `nohup` set it
        signal.signal(signal.SIGHUP, signal.SIG_DFL)
        with cli._signals_unwind():
            assert signal.getsignal(signal.SIGHUP) is cli._terminate
            with pytest.raises(cli.Terminated) as info:
                os.kill(os.getpid(), signal.SIGHUP)
                time.sleep(5)  # the handler raises here, in the main thread
            assert info.value.signum == signal.SIGHUP
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    assert not pid_alive(dead_pid())
    assert not pid_alive(0)


CACHE_WRITER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pipeline.embed import EmbeddingCache
    cache, me = EmbeddingCache(sys.argv[1], 4), sys.argv[2]
    for i in range(60):  # a compaction every 16 puts or so, racing the other writer's
        keys = [f"{me}-{i}-{j}" for j in range(3)]
        cache.put(keys, np.full((3, 4), i, np.float32), np.zeros(3, bool))
        assert cache.get(keys).height == 3
    """
)


def test_two_embeds_share_the_vector_cache(tmp_path: Path) -> None:
    """The cache under data/_cache/ is shared by every experiment's embed: two writers
    compacting it at once lose no vector and never read a shard the other deleted."""
    from pipeline.embed import EmbeddingCache

    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CACHE_WRITER, str(tmp_path), me],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me in ("a", "b")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    keys = [f"{me}-{i}-{j}" for me in "ab" for i in range(60) for j in range(3)]
    assert EmbeddingCache(tmp_path, 4).get(keys).height == len(keys)


# --- MLflow runs of dead processes -----------------------------------------------------------


def test_abandoned_runs_are_killed_at_the_next_start(tmp_path, monkeypatch) -> None:
    import mlflow

    from pipeline import tracking
    from pipeline.config import load_experiment

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setattr(tracking, "STORE_DIR", tmp_path / "mlruns")
    exp = load_experiment("small", [f"data.root={tmp_path}"])
    exp_id = tracking.use_experiment(exp)
    client = mlflow.MlflowClient()
    here = socket.gethostname()

    def running(host: str, pid: int) -> str:
        tags = {"stage": "train", tracking.HOST_TAG: host, tracking.PID_TAG: str(pid)}
        return client.create_run(exp_id, tags=tags).info.run_id

    dead, alive = running(here, dead_pid()), running(here, os.getpid())
    elsewhere = running("another-host", dead_pid())
    with tracking.stage_run(exp, "evaluate", log_config=False) as run:
        assert run.data.tags[tracking.PID_TAG] == str(os.getpid())
        assert run.data.tags[tracking.HOST_TAG] == here
    status = {r: client.get_run(r).info.status for r in (dead, alive, elsewhere, run.info.run_id)}
    assert status == {
        dead: "KILLED",
        alive: "RUNNING",  # this process is still running it
        elsewhere: "RUNNING",  # another machine's process: not ours to judge
        run.info.run_id: "FINISHED",
    }
    with (
        pytest.raises(KeyboardInterrupt),
        tracking.stage_run(exp, "train", log_config=False) as run,
    ):
        raise KeyboardInterrupt  # what the CLI raises on SIGTERM or SIGHUP
    assert client.get_run(run.info.run_id).info.status == "KILLED"
    with pytest.raises(RuntimeError), tracking.stage_run(exp, "train", log_config=False) as run:
        raise RuntimeError("a bug")
    assert client.get_run(run.info.run_id).info.status == "FAILED"


def test_an_interrupt_inside_a_store_write_still_ends_the_run_killed(tmp_path, monkeypatch) -> None:
    """A signal that lands mid-write leaves that write's SQLite transaction open, held by the
    interrupted frame: the store is locked until the frame goes (CI saw `end_run("KILLED")`
    wait out the busy timeout and raise "database is locked" in place of the interrupt)."""
    import sqlite3

    import mlflow

    from pipeline import tracking
    from pipeline.config import load_experiment

    db = tmp_path / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.setattr(tracking, "STORE_DIR", tmp_path / "mlruns")
    exp = load_experiment("small", [f"data.root={tmp_path}"])

    class Torn:  # an object the interrupt left half-changed: its clean-up fails
        def __del__(self) -> None:
            raise KeyError("torn by the interrupt")

    def interrupted_write() -> None:
        write = sqlite3.connect(db, timeout=0.1)
        write.execute("BEGIN IMMEDIATE")  # the write lock, as a half-done MLflow write holds it
        write.execute("UPDATE runs SET name = name")
        torn = Torn()
        torn.cycle = torn  # freed by the collection only
        raise KeyboardInterrupt

    printed = []  # what Python would print as "Exception ignored in ... Traceback"
    monkeypatch.setattr(sys, "unraisablehook", printed.append)
    started = time.monotonic()
    with (
        pytest.raises(KeyboardInterrupt),
        tracking.stage_run(exp, "train", log_config=False) as run,
    ):
        interrupted_write()
    assert mlflow.MlflowClient().get_run(run.info.run_id).info.status == "KILLED"
    assert time.monotonic() - started < 15  # not the 20 s busy timeout
    assert printed == []  # the suite saw a traceback on stderr from a torn ORM object's clean-up


# --- the CLI: two runs at once, a terminated run, a truncated input --------------------------


def cli_env(base: Path) -> dict[str, str]:
    return stage_env(base / "mlflow.db")


def stage_cmd(stage: str, data_root: Path, *extra: str) -> list[str]:
    root = ["--set", f"data.root={data_root}"]
    return [sys.executable, "-m", "pipeline", stage, "--experiment", "small", *root, *extra]


def run_cli(stage: str, base: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = stage_cmd(stage, base / "data", *extra)
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(base), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.glob("*.parquet"))
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tmp base holding `data/small/{raw,features}` (text features off) and an MLflow store."""
    base = tmp_path_factory.mktemp("robust")
    run_cli("raw", base)
    run_cli("features", base, *FAST)
    return base


def concurrently(stage: str, base: Path, *extra: str) -> list[tuple[int, str]]:
    """Start two runs of `stage` while this process holds its lock, let them go once both
    wait, and return their (exit code, stderr)."""
    logs = [base / f"{stage}-{i}.err" for i in range(2)]
    with stage_lock(base / "data" / "small", stage):
        procs = []
        for log in logs:
            with open(log, "w") as err:
                cmd = stage_cmd(stage, base / "data", *extra)
                procs.append(subprocess.Popen(cmd, cwd=REPO, env=cli_env(base), stderr=err))
        for proc, log in zip(procs, logs, strict=True):  # each says whom it waits for
            deadline = time.monotonic() + 120
            while "waiting for" not in log.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, log.read_text()[-3000:]
                time.sleep(0.1)
            line = next(x for x in log.read_text().splitlines() if "waiting for" in x)
            assert f"waiting for {stage} held by pid {os.getpid()} ({stage}) since " in line
    return [
        (proc.wait(timeout=600), log.read_text()) for proc, log in zip(procs, logs, strict=True)
    ]


def assert_clean(results: list[tuple[int, str]]) -> None:
    for code, err in results:
        assert code == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]


def test_two_concurrent_features_runs(built: Path) -> None:
    features = built / "data" / "small" / "features"
    before = digests(features)
    assert_clean(concurrently("features", built, *FAST))
    assert digests(features) == before  # the same tables, whole
    assert not [p for p in features.parent.iterdir() if p.name.startswith((".tmp-", ".old-"))]


def test_two_concurrent_train_runs_agree_on_the_run(built: Path) -> None:
    import mlflow

    from pipeline.io import read_manifest

    assert_clean(concurrently("train", built, *TRAIN))
    root = built / "data" / "small"
    run_id = read_manifest(root / "models" / "lightgbm")["run_id"]
    assert read_manifest(root / "models" / "lightgbm" / "predictions")["run_id"] == run_id
    client = mlflow.MlflowClient(f"sqlite:///{built / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("small").experiment_id], "tags.stage = 'train'"
    )
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]
    assert run_id in {r.info.run_id for r in runs}


def test_sigterm_ends_the_stage_and_its_run_as_killed(built: Path) -> None:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{built / 'mlflow.db'}")
    proc = subprocess.Popen(
        stage_cmd("train", built / "data", *TRAIN),
        cwd=REPO,
        env=cli_env(built),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    query = f"attributes.status = 'RUNNING' and tags.pid = '{proc.pid}'"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # until its MLflow run is open
        found = client.get_experiment_by_name("small")
        if found and client.search_runs([found.experiment_id], query):
            break
        assert proc.poll() is None, "train ended before it was signalled"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and "stopped by SIGTERM" in err
    assert out == ""  # no summary for a stage that did not finish
    runs = client.search_runs([found.experiment_id], f"tags.pid = '{proc.pid}'")
    assert [r.info.status for r in runs] == ["KILLED"]
    root = built / "data" / "small"
    assert not [p for p in root.rglob(".tmp-*")] + [p for p in root.rglob(".old-*")]


def test_a_truncated_input_is_one_error_line_naming_it(built: Path, tmp_path: Path) -> None:
    shutil.copytree(built / "data" / "small" / "raw", tmp_path / "data" / "small" / "raw")
    ads = tmp_path / "data" / "small" / "raw" / "ads.parquet"
    ads.write_bytes(ads.read_bytes()[:-100])
    cmd = stage_cmd("features", tmp_path / "data", *FAST)
    proc = subprocess.run(cmd, cwd=REPO, env=cli_env(tmp_path), capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {ads}: unreadable Parquet")
    assert not (tmp_path / "data" / "small" / "features").exists()


# --- `make ui` owns its server -----------------------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every process below `pid` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP], ids=["kill-9", "hangup"])
def test_the_ui_server_dies_with_its_parent(tmp_path: Path, sig: signal.Signals) -> None:
    from pipeline.ui import _healthy, free_port, port_is_free

    port = free_port()
    env = cli_env(tmp_path) | {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'ui.db'}"}
    cmd = [sys.executable, "-m", "pipeline", "ui", "--port", str(port)]
    parent = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        # a terminal's default: under `nohup` the suite would pass on an ignored SIGHUP, which
        # the UI keeps ignoring by design
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        assert parent.stdout.readline().startswith("MLflow UI: "), "the server did not start"
        assert _healthy(f"http://127.0.0.1:{port}")
        server = descendants(parent.pid)
        assert len(server) >= 2  # `mlflow server` and its uvicorn (+ a watchdog)
        parent.send_signal(sig)
        parent.wait(timeout=60)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(pid_alive(p) for p in server):
            time.sleep(0.2)
        left = [p for p in server if pid_alive(p)]
        for pid in left:  # leave nothing behind when this fails
            os.kill(pid, signal.SIGKILL)
        assert not left
        assert port_is_free(port)
    finally:
        parent.kill()
        parent.wait(timeout=30)
