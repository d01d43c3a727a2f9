"""`make ui`: the MLflow dashboard on 127.0.0.1 against the project's store; Ctrl-C stops it.

Store: `MLFLOW_TRACKING_URI` if set, else `sqlite:///<cwd>/mlruns/mlflow.db`, artifacts for
experiments created from the UI under `<store dir>/artifacts` (where the pipeline puts its own).
The server runs with one worker, job execution and telemetry off (about 600 MB instead of 2.4 GB).

The dashboard owns its server. `mlflow server` runs under a small watchdog (this module run as
`python -m pipeline.ui --watch <pid> -- <command>`), which puts the server and the uvicorn
process it starts in a process group of their own and stops that whole group when the watchdog is
signalled, when the server exits, or when its parent dies: Linux sends it SIGTERM then
(`PR_SET_PDEATHSIG`), `kill -9` of the parent included, and it also checks its parent pid. The
parent stops the watchdog on Ctrl-C, SIGTERM and SIGHUP (closing the terminal; unless SIGHUP is
ignored, as under `nohup`).
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SERVER_ENV = {
    "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    "MLFLOW_DISABLE_TELEMETRY": "true",
}
RUNS_VIEW = "#/experiments/{id}/runs?workflowType=machine_learning"
# the runs-table view `evaluate` saves on the experiment (MLflow's saved views are experiment
# tags `mlflow.sharedViewState.<id>`), opened by the link `make ui` prints
HEADLINE_VIEW = "adctr-headline"
SAVED_VIEW_TAG = "mlflow.sharedViewState."


def default_store_uri() -> str:
    """`MLFLOW_TRACKING_URI` if set, else `sqlite:///<cwd>/mlruns/mlflow.db`."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').resolve()}"


def artifact_root_for(store_uri: str) -> Path:
    """`<db dir>/artifacts` for a sqlite store, else `<cwd>/mlruns/artifacts`."""
    if store_uri.startswith("sqlite:///"):
        return Path(store_uri.removeprefix("sqlite:///")).resolve().parent / "artifacts"
    return (Path.cwd() / "mlruns" / "artifacts").resolve()


def start_server(
    store_uri: str,
    port: int,
    artifact_root: Path | None = None,
    log_path: Path | None = None,
    timeout_s: float = 120.0,
) -> tuple[subprocess.Popen, str]:
    """Start `mlflow server` on 127.0.0.1:`port`, wait until `/health` answers; (process, url).

    The server runs in its own process group (stop it with `stop_server`); its output goes to
    `log_path` (a temporary file when None). Raises RuntimeError, with the log's tail, if it
    exits or is not healthy within `timeout_s`.
    """
    root = artifact_root or artifact_root_for(store_uri)
    root.mkdir(parents=True, exist_ok=True)
    if store_uri.startswith("sqlite:///"):
        Path(store_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if not port_is_free(port):
        raise RuntimeError(f"port {port} on {HOST} is in use; pick another with --port")
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="mlflow-ui-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    cmd = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", store_uri,
        "--default-artifact-root", root.as_uri(),
        "--host", HOST,
        "--port", str(port),
        "--workers", "1",
    ]  # fmt: skip
    watched = [sys.executable, "-m", "pipeline.ui", "--watch", str(os.getpid()), "--", *cmd]
    with open(log_path, "ab") as out:
        process = subprocess.Popen(
            watched,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **SERVER_ENV},
            start_new_session=True,  # Ctrl-C in the terminal reaches us only; we stop it
        )
    url = f"http://{HOST}:{port}"
    deadline = time.monotonic() + timeout_s
    try:  # a server that never got healthy, or whose start was interrupted, is stopped
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {process.returncode}:\n{_tail(log_path)}"
                )
            if _healthy(url):
                log.info("MLflow server ready at %s (pid %d, log %s)", url, process.pid, log_path)
                return process, url
            time.sleep(0.5)
        raise RuntimeError(f"mlflow server not healthy after {timeout_s:.0f}s:\n{_tail(log_path)}")
    except BaseException:
        stop_server(process)
        raise


def stop_server(process: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM the watchdog (which stops the server's group), SIGKILL it if it lingers."""
    if process.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)  # the group start_server created, led by this pid
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=timeout_s)
            return
        except subprocess.TimeoutExpired:
            log.warning("mlflow server watchdog (pid %d) ignored %s", process.pid, sig.name)


def watch(parent: int, cmd: list[str], grace_s: float = 10.0) -> int:
    """The watchdog: run `cmd` in a new process group until it exits, a signal comes or
    `parent` dies, then stop that whole group; the command's exit code (0 when stopped)."""
    _parent_death_signal(signal.SIGTERM)
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda signum, frame: stopped.append(signum))
    if os.getppid() != parent:  # the parent died before the death signal was armed
        return 0
    server = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        while not stopped and os.getppid() == parent:
            try:
                return server.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        return 0
    finally:
        _stop_group(server, grace_s)


def _stop_group(leader: subprocess.Popen, grace_s: float) -> None:
    """SIGTERM the process group `leader` leads, SIGKILL what is left after `grace_s`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.monotonic() + grace_s
        try:
            os.killpg(leader.pid, sig)
            while time.monotonic() < deadline:
                leader.poll()  # reap the leader, so that only live members keep the group
                os.killpg(leader.pid, 0)
                time.sleep(0.1)
        except ProcessLookupError:  # no process left in the group
            return


def _parent_death_signal(sig: int) -> None:
    """Ask Linux to send `sig` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(sig), 0, 0, 0)
    except (OSError, AttributeError) as exc:
        log.warning("no parent-death signal: %s", exc)


def newest_experiment_url(url: str) -> str:
    """Deep link to the runs table of the newest non-default experiment (in its headline view
    where `evaluate` saved one), else the home page."""
    try:
        body = json.dumps({"max_results": 10, "order_by": ["creation_time DESC"]}).encode()
        req = urllib.request.Request(
            f"{url}/ajax-api/2.0/mlflow/experiments/search",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            experiments = json.load(resp).get("experiments", [])
    except (OSError, ValueError) as exc:
        log.debug("could not list experiments: %s", exc)
        return f"{url}/"
    named = [e for e in experiments if e.get("experiment_id") != "0"]
    if not named:
        return f"{url}/"
    link = f"{url}/{RUNS_VIEW.format(id=named[0]['experiment_id'])}"
    tags = {t.get("key") for t in named[0].get("tags", [])}
    if SAVED_VIEW_TAG + HEADLINE_VIEW in tags:  # the headline columns, sorted by the champion's
        link += f"&viewStateShareKey={HEADLINE_VIEW}"
    return link


def open_in_browser(url: str) -> bool:
    """Open `url` in the desktop's browser where the session has a display (a terminal-only
    session gets nothing started, not a text browser); whether it did."""
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    import webbrowser

    return webbrowser.open(url)


def serve(port: int = 5000) -> int:
    """Run the dashboard until Ctrl-C; print its URL. 0 on a clean stop, 1 if it failed."""
    store = default_store_uri()
    log.info("starting the MLflow UI on %s:%d against %s", HOST, port, store)
    # `kill` and closing the terminal stop it as cleanly as Ctrl-C (a SIGHUP ignored by
    # `nohup` stays ignored)
    stops = [signal.SIGTERM]
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        stops.append(signal.SIGHUP)
    previous = {sig: signal.signal(sig, _interrupt) for sig in stops}
    process = None
    try:
        process, url = start_server(store, port)
        link = newest_experiment_url(url)
        print(f"MLflow UI: {link}\n(store {store}; Ctrl-C stops it)", flush=True)
        open_in_browser(link)
        code = _wait(process)
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    except KeyboardInterrupt:
        log.info("stopping the MLflow UI")
        return 0
    finally:
        if process is not None:
            stop_server(process)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    log.error("mlflow server exited with %d", code)
    return 1


def _wait(process: subprocess.Popen) -> int:
    """Wait in short slices: a signal caught by another thread (torch's) still ends the wait."""
    while True:
        try:
            return process.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            continue


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def port_is_free(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago (for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":  # the watchdog: python -m pipeline.ui --watch <parent pid> -- <cmd>
    if len(sys.argv) < 5 or sys.argv[1] != "--watch" or sys.argv[3] != "--":
        sys.exit("usage: python -m pipeline.ui --watch <parent pid> -- <command ...>")
    sys.exit(watch(int(sys.argv[2]), sys.argv[4:]))
