"""The model comparison table: models as columns, metrics as rows, the winner per row marked.

Rendered twice from the same cells: Markdown (for the closing note and `table.md`) and a
standalone HTML page (for the MLflow artifact viewer).
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Collection, Mapping

Direction = Callable[[str], bool | None]
STAR = "★"
MISSING = "–"
LOWER_IS_BETTER = frozenset({"logloss", "loss", "ne", "ece", "brier", "rmse", "mae"})
NO_WINNER = frozenset({"n", "positives", "rows", "impressions", "clicks", "conversions"})
# the comparison table's style, in every page that shows it (`table.html`, `report.html`)
TABLE_STYLE = """table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: 4px 10px; }
td { text-align: right; font-variant-numeric: tabular-nums; }
th[scope=row] { text-align: left; font-weight: normal; font-family: monospace; }
td.winner { background: #e6f4ea; }"""
# the test metrics a reader looks at first: CTR and CVR side by side, CTCVR, cold-start CTR
HEADLINE_METRICS = (
    "test_ctr_auc",
    "test_ctr_logloss",
    "test_ctr_ne",
    "test_ctr_calibration",
    "test_cvr_auc",
    "test_cvr_logloss",
    "test_ctcvr_auc",
    "test_cold_ctr_auc",
)


def default_lower_is_better(metric: str) -> bool | None:
    """True for losses (logloss, NE, ECE, ...), None for counts (no winner), else False."""
    tokens = metric.lower().split("_")
    if tokens[-1] in NO_WINNER:
        return None
    return any(token in LOWER_IS_BETTER for token in tokens)


def default_target(metric: str) -> float | None:
    """Calibration ratios (sum p / sum y) are best closest to 1."""
    return 1.0 if metric.lower().endswith("calibration") else None


def comparison_table(
    metrics: Mapping[str, Mapping[str, float]],
    lower_is_better: Collection[str] | Direction = default_lower_is_better,
    target: Callable[[str], float | None] = default_target,
    digits: int = 4,
    title: str = "Model comparison",
    references: Collection[str] = (),
) -> tuple[str, str]:
    """(markdown, html) of `metrics[model][metric]`, models as columns, metrics as rows.

    `lower_is_better` is a set of metric names (all others: higher is better) or a function of
    the name returning True / False, or None for "no winner" (counts). A metric for which
    `target(name)` gives a number is won by the value closest to it. The winner of each row is
    bold with a ★ (all of them on a tie; none with fewer than two defined values); NaN or a
    missing value shows as "–". Columns named in `references` (e.g. an oracle's best possible
    scores) are shown but never compete.
    """
    models = list(metrics)
    rows = list(dict.fromkeys(m for per_model in metrics.values() for m in per_model))
    direction = _direction(lower_is_better)
    cells: list[tuple[str, list[tuple[str, bool]]]] = []
    for row in rows:
        values = [_value(metrics[model].get(row)) for model in models]
        competing = [
            math.nan if m in references else v for m, v in zip(models, values, strict=True)
        ]
        winners = _winners(competing, direction(row), target(row))
        cells.append((row, [(_fmt(v, digits), i in winners) for i, v in enumerate(values)]))
    legend = _legend(rows, direction, target)
    if references:
        legend += f" Not competing (reference): {', '.join(references)}."
    return _markdown(models, cells, legend), _html(models, cells, legend, title)


def _direction(lower_is_better: Collection[str] | Direction) -> Direction:
    if callable(lower_is_better):
        return lower_is_better
    names = set(lower_is_better)
    return lambda metric: metric in names


def _value(value: float | None) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _winners(values: list[float], lower: bool | None, target: float | None) -> set[int]:
    finite = [(i, v) for i, v in enumerate(values) if math.isfinite(v)]
    if len(finite) < 2 or (lower is None and target is None):
        return set()
    if target is not None:
        scores = [(i, abs(v - target)) for i, v in finite]
        lower = True
    else:
        scores = finite
    best = min(s for _, s in scores) if lower else max(s for _, s in scores)
    return {i for i, s in scores if s == best}


def _fmt(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return MISSING
    if value.is_integer() and abs(value) >= 2:
        return f"{int(value):,}"
    return f"{value:.{digits}f}"


def _legend(rows: list[str], direction: Direction, target: Callable[[str], float | None]) -> str:
    def kinds(names: list[str]) -> list[str]:  # test_ctr_logloss, test_cvr_logloss -> logloss
        return list(dict.fromkeys(n.rsplit("_", 1)[-1] for n in names))

    lower = [r for r in rows if target(r) is None and direction(r) is True]
    aimed = {r.rsplit("_", 1)[-1]: target(r) for r in rows if target(r) is not None}
    parts = [f"{STAR} = best per row; higher is better unless noted"]
    if lower:
        parts.append("lower is better: " + ", ".join(kinds(lower)))
    if aimed:
        parts.append("closest to " + ", ".join(f"{v:g} for {k}" for k, v in aimed.items()))
    parts.append(f"{MISSING} = undefined (e.g. one label class in the slice)")
    return "; ".join(parts) + "."


def _markdown(models: list[str], cells: list, legend: str) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [
        "| metric | " + " | ".join(esc(m) for m in models) + " |",
        "|---|" + "---:|" * len(models),
    ]
    for row, values in cells:
        shown = [f"**{text} {STAR}**" if win else text for text, win in values]
        lines.append(f"| {esc(row)} | " + " | ".join(shown) + " |")
    return "\n".join(lines) + f"\n\n{legend}\n"


def _html(models: list[str], cells: list, legend: str, title: str) -> str:
    head = "".join(f"<th>{html.escape(m)}</th>" for m in models)
    body = []
    for row, values in cells:
        tds = "".join(
            f'<td class="winner"><b>{html.escape(text)} {STAR}</b></td>'
            if win
            else f"<td>{html.escape(text)}</td>"
            for text, win in values
        )
        body.append(f"<tr><th scope='row'>{html.escape(row)}</th>{tds}</tr>")
    rows_html = "\n".join(body)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em; }}
{TABLE_STYLE}
</style></head>
<body><h2>{html.escape(title)}</h2>
<table><thead><tr><th>metric</th>{head}</tr></thead>
<tbody>
{rows_html}
</tbody></table>
<p>{html.escape(legend)}</p>
</body></html>
"""
