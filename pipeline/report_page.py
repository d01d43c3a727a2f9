"""`evaluation/report.html`: the evaluation on one self-contained page that needs no server.

The headline table (CTR and CVR of every model, the oracle and the reference model beside
them), then every evaluation plot, and the replay's budget curve and the published bid table's
histogram where those exist. Images are PNGs inlined as `data:` URIs, the style is inline, and
the page links to nothing, so it opens from disk, from an e-mail or from the MLflow artifact
viewer alike.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import polars as pl
from matplotlib.figure import Figure

from pipeline import report
from pipeline.config import Experiment
from pipeline.io import DataError
from pipeline.publish import TABLE_FILE, read_published
from pipeline.stage import Layout, StageSummary
from pipeline.ui import open_in_browser

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
ORACLE = "oracle"  # the model name of the true probabilities, a reference
DPI = 80
# the page's sections: a heading and the plot names (of `evaluate`'s figures) it shows
SECTIONS = (
    ("Calibration: reliability before and after calibration", ("reliability_",)),
    ("Ranking: ROC and lift", ("roc_ctr", "roc_ctcvr", "lift_ctr")),
    ("Slices: cold / warm, placement, position, users", ("slices_ctr_auc",)),
    ("Training", ("training_neural",)),
    ("Feature importance", ("importance_",)),
    ("Bidding", ("replay_budget", "bid_histogram")),
)


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (the page's resolution)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def bidding_figures(layout: Layout) -> dict[str, Figure]:
    """The replay's conversions-vs-budget curve and the published bid table's histogram, for
    the ones that exist on disk (a replay or an export run before this evaluation)."""
    from pipeline.export import bid_histogram
    from pipeline.replay_report import budget_plot

    figures = {}
    replayed = layout.replay / "replay.parquet"
    if replayed.is_file():
        figures["replay_budget"] = budget_plot(pl.read_parquet(replayed))
    try:
        published = read_published(layout.exports)
    except (OSError, ValueError) as exc:  # a broken export is export's to report, not ours
        log.warning("report: the published %s is unreadable (%s), left out", TABLE_FILE, exc)
        published = None
    if published is not None:
        figures["bid_histogram"] = bid_histogram(published[0])
    return figures


def _section(heading: str, images: list[tuple[str, bytes]]) -> str:
    tags = "\n".join(
        f'<figure><img alt="{html.escape(name)}" src="data:image/png;base64,'
        f'{base64.b64encode(data).decode()}"><figcaption>{html.escape(name)}</figcaption></figure>'
        for name, data in images
    )
    return f"<h2>{html.escape(heading)}</h2>\n<div class='grid'>\n{tags}\n</div>"


def render(title: str, facts: Mapping[str, str], headline: str, images: Mapping[str, bytes]) -> str:
    """The page: `facts` (champion, rows, ...) as a list, `headline` (an HTML table fragment),
    then `images` (name -> PNG) grouped by `SECTIONS`; names no section claims go last."""
    shown: set[str] = set()
    parts = []
    for heading, prefixes in SECTIONS:
        chosen = [(n, d) for n, d in images.items() if n.startswith(prefixes) and n not in shown]
        shown.update(n for n, _ in chosen)
        if chosen:
            parts.append(_section(heading, chosen))
    rest = [(n, d) for n, d in images.items() if n not in shown]
    if rest:
        parts.append(_section("Other plots", rest))
    items = "".join(f"<li>{html.escape(k)}: <b>{html.escape(v)}</b></li>" for k, v in facts.items())
    body = "\n".join(parts)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; max-width: 1400px; }}
{report.TABLE_STYLE}
.grid {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure {{ margin: 0; max-width: 100%; }} img {{ max-width: 100%; border: 1px solid #eee; }}
figcaption {{ font-family: monospace; font-size: 0.85em; color: #555; }}
</style></head>
<body><h1>{html.escape(title)}</h1>
<ul>{items}</ul>
<h2>Headline metrics (test)</h2>
{headline}
{body}
</body></html>
"""


def evaluation_page(
    experiment: str,
    per_model: Mapping[str, Mapping[str, float]],
    champion: str | None,
    facts: Mapping[str, str],
    images: Mapping[str, bytes],
) -> str:
    """The page of one evaluation: the headline metrics of every model side by side (the
    oracle a reference that does not compete), the champion and `facts`, and `images`."""
    chosen = [k for k in report.HEADLINE_METRICS if any(k in m for m in per_model.values())]
    _, page = report.comparison_table(
        {k: {r: m.get(r, math.nan) for r in chosen} for k, m in per_model.items()},
        references={ORACLE},
    )
    facts = {"champion": champion or "none qualifies", **facts}
    title = f"adctr evaluation: {experiment}"
    return render(title, facts, table_fragment(page), images)


def table_fragment(page: str) -> str:
    """The `<table>` and its legend out of `report.comparison_table`'s standalone HTML page."""
    start = page.index("<table>")
    end = page.index("</body>")
    return page[start:end].strip()


def run(exp: Experiment) -> StageSummary:
    """`make report`: the path of `evaluation/report.html`, opened in a browser where the
    session has a display; says when a replay or an export is newer than the report."""
    layout = Layout.of(exp)
    page = layout.evaluation / REPORT_FILE
    if not page.is_file():
        raise DataError(f"{page}: no report yet; run `make evaluate EXP={exp.name}` first")
    written = page.stat().st_mtime
    newer = [p for p in (layout.replay / "replay.parquet", layout.exports) if _mtime(p) > written]
    if newer:
        log.warning(
            "%s is newer than the report; `make evaluate` again to include it",
            " and ".join(str(p) for p in newer),
        )
    open_in_browser(page.as_uri())
    print(page.as_uri(), flush=True)
    return StageSummary("report", output=str(page))


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime  # a link: its target's, the published version
    except OSError:
        return 0.0
