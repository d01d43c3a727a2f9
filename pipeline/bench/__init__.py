"""Benchmarks (`make bench`); `measured` runs one command as a wrapper's only child so that its
peak RSS is its own."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# the stages of `make features train evaluate`, in the Makefile's order, with
# the flags it passes
MAIN_JOB = (
    ("raw", ()),
    ("finetune", ("--if-needed",)),
    ("understand", ("--if-needed",)),
    ("embed", ()),
    ("features", ()),
    ("train", ()),
    ("evaluate", ()),
)

# runs argv[1:] as its only child; prints wall seconds, CPU seconds and the child's peak RSS
_WRAPPER = """
import json, resource, subprocess, sys, time
t = time.perf_counter()
proc = subprocess.run(sys.argv[1:], capture_output=True, text=True)
wall = time.perf_counter() - t
use = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": proc.returncode, "wall": wall, "cpu": use.ru_utime + use.ru_stime,
                  "rss": use.ru_maxrss * 1024, "out": proc.stdout[-2000:],
                  "err": proc.stderr[-3000:]}))
"""


def measured(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run `cmd` in the repository as the only child of a wrapper process: its return code
    (`rc`), `wall` and `cpu` seconds, peak RSS in bytes (`rss`) and the tails of its stdout
    (`out`) and stderr (`err`). Raises RuntimeError when it fails."""
    base = {"MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, "-c", _WRAPPER, *cmd],
        cwd=REPO,
        env={**os.environ, **base, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{result['err']}")
    return result


def stage_seconds(out: str) -> float:
    """The stage's own seconds from its one-line summary in `out` (nan where it printed none,
    e.g. a stage skipped as not needed)."""
    found = re.search(r"\] rows in=.* in ([0-9.]+)s ->", out)
    return float(found.group(1)) if found else math.nan
