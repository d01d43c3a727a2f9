"""Lineage checks: a stage refuses inputs built from another version of their own inputs.

Every manifest records `inputs`, the digest (`io.input_digest`) of each upstream manifest it was
built from. A reader compares them with the upstream outputs on disk now, and a model with its
predictions by the MLflow run that made both; a mismatch is one `DataError` line naming both
versions and the command that rebuilds the stale output.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from pipeline.io import DataError, input_digest, read_manifest

log = logging.getLogger(__name__)


def check_lineage(directory: Path, inputs: Mapping[str, Path], rerun: str) -> None:
    """Refuse `directory` unless it was built from the current version of each named input.

    Compares the digest its manifest recorded for each `inputs` name with `input_digest` of
    that path now; a mismatch is a DataError naming both versions and `rerun` (the command
    that rebuilds `directory`). A manifest that records no digest for a name (an output of an
    older version) is accepted with a warning.
    """
    recorded = read_manifest(directory).get("inputs") or {}
    for name, path in inputs.items():
        old = recorded.get(name)
        if not isinstance(old, str):
            log.warning(
                "%s records no digest of its %s input: lineage not checked", directory, name
            )
            continue
        new = input_digest(Path(path))
        if old != new:
            raise DataError(
                f"{directory} was built from {name} {old[:8]}, but {path} is now {new[:8]}: "
                f"run `{rerun}`"
            )


def check_same_run(first: Path, second: Path, rerun: str) -> None:
    """Refuse two outputs that belong together (a model and its predictions) unless their
    manifests name the same `run_id`; one without a run id is accepted with a warning."""
    runs = [read_manifest(d).get("run_id") for d in (first, second)]
    if None in runs:
        log.warning("%s or %s records no run id: not checked as a pair", first, second)
    elif runs[0] != runs[1]:
        raise DataError(
            f"{first} is from run {runs[0]}, {second} from run {runs[1]}: run `{rerun}`"
        )
