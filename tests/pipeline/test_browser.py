"""The MLflow dashboard and `report.html` in headless Chromium: the link `make ui` prints shows
every model's test CTR and CVR AUC with no click, the comparison run's page its ★ table, each
run's page its values, and the report renders from disk with no network.

Needs Debian's /usr/bin/chromium and the `playwright` Python package (no `playwright install`:
the system browser is used); skips cleanly without them. `.ci/run` installs chromium.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import urllib.request
from pathlib import Path

import pytest

from pipeline.ui import (
    artifact_root_for,
    default_store_uri,
    free_port,
    newest_experiment_url,
    start_server,
    stop_server,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
MODELS = ("lightgbm", "neural", "logreg")
METRICS = ("test_ctr_auc", "test_cvr_auc")
EXPERIMENT = "small"
# How the store is made: True reads the store that the session fixture `small_pipeline`
# (tests/conftest.py) made by running every stage of the `small` experiment through
# `python -m pipeline` (a failing stage fails this test); False logs two hand-made model runs
# with mlflow directly (`build_store_by_hand`), for working on the UI side alone.
STORE_FROM_PIPELINE = True
_SLICED_KEYS = [
    f"test_{part}{target}_{name}"
    for part in ("", "cold_", "placement_feed_", "placement_search_", "pos_1_", "new_user_")
    for target in ("ctr", "cvr", "ctcvr")
    for name in ("auc", "logloss", "ne", "calibration", "ece", "gauc")
]


def build_store_by_hand(root: Path) -> str:
    """Experiment `small` with one tagged run per model holding the test metrics."""
    import mlflow
    from mlflow.entities import Metric

    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment(
        EXPERIMENT, artifact_location=(root / "artifacts" / EXPERIMENT).as_uri()
    )
    values = {"lightgbm": (0.71234567, 0.64561234), "neural": (0.73456789, 0.66789012)}
    for model, (ctr_auc, cvr_auc) in values.items():
        tags = {"model": model, "stage": "train", "experiment": EXPERIMENT}
        run = client.create_run(exp_id, run_name=model, tags=tags)
        metrics = {"test_ctr_auc": ctr_auc, "test_cvr_auc": cvr_auc}
        for key in _SLICED_KEYS:  # as many metric keys as `evaluate` logs, so the page scrolls
            metrics.setdefault(key, 0.25)
        client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()])
        client.set_terminated(run.info.run_id)
    return uri


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def dashboard(request, tmp_path_factory, browser):
    root = tmp_path_factory.mktemp("dashboard")
    if STORE_FROM_PIPELINE:
        uri = request.getfixturevalue("small_pipeline").tracking_uri
    else:
        uri = build_store_by_hand(root)
    process, url = start_server(uri, free_port(), log_path=root / "server.log")
    yield url
    stop_server(process)


def logged_model_runs(url: str) -> dict[str, dict]:
    """Per model tag: the newest run of experiment `small` that has the test metrics (REST)."""
    exp = _post(url, "experiments/get-by-name", None, {"experiment_name": EXPERIMENT})
    exp_id = exp["experiment"]["experiment_id"]
    runs = _post(
        url, "runs/search", {"experiment_ids": [exp_id], "order_by": ["start_time DESC"]}
    ).get("runs", [])
    found: dict[str, dict] = {}
    for run in runs:
        tags = {t["key"]: t["value"] for t in run["data"].get("tags", [])}
        metrics = {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
        model = tags.get("model")
        if model in MODELS and model not in found and all(k in metrics for k in METRICS):
            found[model] = {"id": run["info"]["run_id"], "name": run["info"]["run_name"]}
            found[model].update(metrics=metrics, experiment_id=exp_id)
    return found


def test_store_defaults(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_store_uri() == f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    assert artifact_root_for(default_store_uri()) == tmp_path / "mlruns" / "artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////elsewhere/x.db")
    assert default_store_uri() == "sqlite:////elsewhere/x.db"
    assert artifact_root_for(default_store_uri()) == Path("/elsewhere/artifacts")


def test_start_server_refuses_a_busy_port(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port}"):
            start_server(f"sqlite:///{tmp_path}/mlflow.db", port)


@pytest.mark.browser
@pytest.mark.slow
def test_each_model_run_page_lists_its_aucs(dashboard, browser) -> None:
    url = dashboard
    runs = logged_model_runs(url)
    assert set(runs) == set(MODELS), f"model runs with {METRICS} in the store: {sorted(runs)}"
    exp_id = runs[MODELS[0]]["experiment_id"]
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    for model, run in runs.items():  # each run's own page lists the values it logged
        page.goto(f"{url}/#/experiments/{exp_id}/runs/{run['id']}")
        page.get_by_role("heading", name=re.compile(re.escape(run["name"]))).first.wait_for()
        for metric in METRICS:
            search = page.get_by_placeholder("Search metrics")
            if search.count():
                search.first.fill(metric)
            name = re.compile(rf"^\s*{metric}(?![A-Za-z_])")  # cells have no separator
            shown = page.get_by_role("row").filter(has_text=name).first.inner_text()
            shown = shown.split(metric, 1)[-1].strip()
            assert _shows(shown, run["metrics"][metric]), (
                f"{model}: {metric} shown as {shown!r} on the run page, "
                f"logged {run['metrics'][metric]}"
            )
    page.close()


def _runs_table(page, metrics: tuple[str, ...]) -> list[tuple[str, dict[str, str]]]:
    """(run name, {metric: shown text}) per row of the runs grid.

    The grid pins the name column apart from the metric columns, so cells are joined by their
    row index; `col-id` names the column (`attributes.`Run Name``, `metrics.`<key>``).
    """
    cells = page.locator("[role=gridcell][col-id]").evaluate_all(
        """els => els.map(e => [
            (e.closest('[row-index]') || {getAttribute: () => null}).getAttribute('row-index'),
            e.getAttribute('col-id'),
            e.innerText.trim(),
        ])"""
    )
    rows: dict[str, dict[str, str]] = {}
    for index, col, text in cells:
        if index is not None:
            rows.setdefault(index, {})[col] = text
    table = []
    for row in rows.values():
        name = re.sub(r"^#[0-9a-fA-F]{6}\s*", "", row.get("attributes.`Run Name`", ""))
        table.append((name.strip(), {m: row.get(f"metrics.`{m}`", "") for m in metrics}))
    return table


def _shows(text: str, value: float) -> bool:
    """True if `text` starts with `value` rounded to however many decimals it shows."""
    match = re.match(r"\s*(-?\d+)(?:\.(\d+))?", text)
    if not match:
        return False
    decimals = len(match.group(2) or "")
    tolerance = 0.5 * 10**-decimals + 1e-12 if decimals else 1e-12  # "1" must mean 1.0
    return math.isclose(float(match.group(0)), value, abs_tol=tolerance)


def _post(url: str, endpoint: str, body: dict | None, query: dict | None = None) -> dict:
    full = f"{url}/ajax-api/2.0/mlflow/{endpoint}"
    if query:
        full += "?" + "&".join(f"{k}={v}" for k, v in query.items())
        request = urllib.request.Request(full)
    else:
        request = urllib.request.Request(
            full, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.mark.browser
@pytest.mark.slow
def test_the_report_opens_with_no_network(small_pipeline, browser, tmp_path) -> None:
    """`evaluation/report.html` from disk with every request that is not the file itself
    refused: the headline table and at least 6 images render. ADCTR_SCREENSHOTS=<dir> keeps
    the screenshot."""
    report = small_pipeline.root / "evaluation" / "report.html"
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, offline=True)
    page = context.new_page()
    fetched: list[str] = []

    def refuse(route) -> None:
        if route.request.url != report.as_uri() and not route.request.url.startswith("data:"):
            fetched.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page.route("**/*", refuse)
    page.goto(report.as_uri())
    page.wait_for_load_state("load")
    assert not fetched, f"the report asked for {fetched}"
    headline = page.locator("table").first
    assert headline.locator("th", has_text="test_ctr_auc").count() == 1
    assert headline.locator("th", has_text="test_cvr_auc").count() == 1
    for model in (*MODELS, "oracle"):
        assert headline.locator("thead th", has_text=model).count() == 1, model
    drawn = page.evaluate(
        "Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length"
    )
    assert drawn >= 6, f"{drawn} images drawn"
    keep = os.environ.get("ADCTR_SCREENSHOTS")
    shot = (Path(keep) if keep else tmp_path) / "report.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=shot, full_page=True)
    assert shot.stat().st_size > 10_000
    context.close()


def _screenshot_dir(tmp_path: Path) -> Path:
    keep = os.environ.get("ADCTR_SCREENSHOTS")
    out = Path(keep) if keep else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.browser
@pytest.mark.slow
def test_the_printed_link_shows_ctr_and_cvr_on_the_first_screen(
    dashboard, browser, tmp_path
) -> None:
    """The link `make ui` prints opens the headline view `evaluate` saved: the CTR and CVR
    AUCs of every model are in the table's cells with no click; the comparison run's page
    shows the ★ table in its description."""
    url = dashboard
    runs = logged_model_runs(url)
    link = newest_experiment_url(url)
    assert link.endswith("&viewStateShareKey=adctr-headline"), link
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.set_default_timeout(60_000)
    page.goto(link)
    for run in runs.values():
        page.get_by_role("link", name=run["name"], exact=True).first.wait_for()
    for metric in METRICS:
        page.get_by_role("columnheader", name=metric, exact=True).first.wait_for()
    table = _runs_table(page, METRICS)
    for model, run in runs.items():
        rows = [row for name, row in table if name == run["name"]]
        assert rows, f"{model}: run {run['name']!r} not in the runs table {table}"
        for metric in METRICS:
            shown = [row.get(metric, "") for row in rows]
            assert any(_shows(s, run["metrics"][metric]) for s in shown), (
                f"{model}: {metric} shown as {shown}, logged {run['metrics'][metric]}"
            )
    out = _screenshot_dir(tmp_path)
    page.screenshot(path=out / "ui_first_screen.png")

    page.get_by_role("link", name="comparison", exact=True).first.click()  # as a reader would
    page.get_by_text("★").first.wait_for()
    page.get_by_text("test_ctr_auc").first.wait_for()
    page.screenshot(path=out / "ui_comparison_run.png")
    page.close()
