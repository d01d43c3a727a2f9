"""The feature spec: the contract between the features stage and every model (FuxiCTR's
`FeatureMap`, torchrec's `EmbeddingBagConfig`).

`FeatureSpec` says which columns of the feature tables are model inputs (by kind, family and
model), which are labels and meta columns, whether the data has conversions and text, the
behaviour priors, the split bounds and the rows per split. It is written as
`feature_spec.json` by the features stage and read by train, evaluate, export and the MLflow
model. The JSON is `json.dumps(spec.to_dict(), indent=2)`: keys in a fixed order, so a spec
read and written again is byte-identical. Pure: the caller names the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("categorical", "numeric", "embedding", "item")
# item features (neural only): codes into the item table `<ITEM_TABLE>.parquet` of the features
# folder (item_code, ad_id, vec), 0 = padding; the impressed ad's code and the user's last k
ITEM_TABLE = "item_vectors"
# a keyed embedding (an embedding with `table`): its column holds Int32 codes into the table
# `<table>.parquet` of the features folder (item_code, ad_id, vec), 0 = the zero vector, so each
# vector is stored once (per ad), not once per impression
AD_TEXT_TABLE = "ad_text_vectors"
# the user interest vector (`features.interest_store`): its column holds Int32 codes into the
# events of `<INTEREST_EVENTS>.parquet`; readers rebuild the vectors from the events and the
# projected text vectors of `<INTEREST_VECTORS>.parquet` (each event stored once, not a vector
# per impression)
INTEREST = "e_user_interest"
INTEREST_EVENTS = "interest_events"
INTEREST_VECTORS = "interest_vectors"
AD_ITEM = "s_ad_item"
HISTORY = "s_history"
REFERENCE_MODEL = "logreg"  # models/logreg.py: reads the shared columns and every embedding
FEATURE_KEYS = ("name", "kind", "dim", "source", "cardinality", "family", "models", "table")
SPLIT_KEYS = ("split_mode", "split_by", "valid_start", "test_start", "test_end")
SPEC_KEYS = ("features", "labels", "meta", "has_conversion", "has_text", "priors", "split", "rows")


def _unknown(what: str, got: Mapping[str, Any], known: tuple[str, ...]) -> None:
    extra = sorted(set(got) - set(known))
    if extra:
        raise ValueError(f"{what}: unknown key(s) {extra} (known: {', '.join(known)})")


@dataclass(frozen=True)
class Feature:
    """One model input column. `cardinality` (codes incl. the OOV / padding 0) only for
    categorical and item features, `dim` only for embeddings (width) and item features (codes
    per row); `models=None` means every model; `table` only for a keyed embedding (the
    features folder's table its codes index)."""

    name: str
    kind: str  # categorical | numeric | embedding | item
    source: str
    family: str  # id | context | ad | behaviour | text
    cardinality: int | None = None
    dim: int | None = None
    models: tuple[str, ...] | None = None
    table: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r}: kind must be one of {KINDS}, got {self.kind}")
        if (self.kind in ("categorical", "item")) != (self.cardinality is not None):
            raise ValueError(
                f"feature {self.name!r}: cardinality is for categorical and item features"
            )
        if (self.kind in ("embedding", "item")) != (self.dim is not None):
            raise ValueError(f"feature {self.name!r}: dim is for embedding and item features")
        if self.table is not None and self.kind != "embedding":
            raise ValueError(f"feature {self.name!r}: table is for embedding features")

    def feeds(self, model: str | None) -> bool:
        """Whether this column is an input of `model` (None: of any model). The reference
        logistic regression also takes every embedding (the text embeddings where present)."""
        if model is None or self.models is None or model in self.models:
            return True
        return model == REFERENCE_MODEL and self.kind == "embedding"

    @classmethod
    def from_dict(cls, entry: Mapping[str, Any]) -> Feature:
        _unknown(f"feature {entry.get('name')!r}", entry, FEATURE_KEYS)
        models = entry.get("models")
        return cls(
            name=entry["name"],
            kind=entry["kind"],
            source=entry["source"],
            family=entry["family"],
            cardinality=None if entry.get("cardinality") is None else int(entry["cardinality"]),
            dim=None if entry.get("dim") is None else int(entry["dim"]),
            models=None if models is None else tuple(models),
            table=entry.get("table"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Keys in FEATURE_KEYS order, the optional ones only when set."""
        values = {
            "name": self.name,
            "kind": self.kind,
            "dim": self.dim,
            "source": self.source,
            "cardinality": self.cardinality,
            "family": self.family,
            "models": None if self.models is None else list(self.models),
            "table": self.table,
        }
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class SplitBounds:
    """How the rows were split: `time` (ISO bounds of valid / test) or `given` (own column)."""

    split_mode: str = ""
    split_by: str | None = None  # fraction: cut by row shares in time order (days: omitted)
    valid_start: str | None = None
    test_start: str | None = None
    test_end: str | None = None

    @classmethod
    def from_dict(cls, bounds: Mapping[str, Any]) -> SplitBounds:
        _unknown("split", bounds, SPLIT_KEYS)
        return cls(**dict(bounds))

    def to_dict(self) -> dict[str, str]:
        values = {k: getattr(self, k) for k in SPLIT_KEYS}
        return {k: v for k, v in values.items() if v is not None}


@dataclass(frozen=True)
class FeatureSpec:
    """What the feature tables hold; see the module docstring."""

    features: tuple[Feature, ...]
    labels: tuple[str, ...] = ("click", "conversion")
    meta: tuple[str, ...] = ()
    has_conversion: bool = True
    has_text: bool = False
    priors: Mapping[str, float] = field(default_factory=dict)  # ctr, cvr
    split: SplitBounds = field(default_factory=SplitBounds)
    rows: Mapping[str, int] = field(default_factory=dict)  # per split

    def columns(self, kind: str, model: str | None = None) -> tuple[Feature, ...]:
        """The features of one kind that feed `model` (None: any model), in spec order."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return tuple(f for f in self.features if f.kind == kind and f.feeds(model))

    def by_kind(self, model: str | None = None) -> dict[str, tuple[Feature, ...]]:
        """`{categorical: ..., numeric: ..., embedding: ...}` for `model`."""
        return {kind: self.columns(kind, model) for kind in KINDS}

    def names(self, model: str | None = None) -> list[str]:
        """Input column names of `model`: categorical, numeric, embedding, then item."""
        return [f.name for kind in KINDS for f in self.columns(kind, model)]

    @property
    def tables(self) -> tuple[str, ...]:
        """The features folder's lookup tables the inputs index (the item table first)."""
        keyed = [f.table for f in self.features if f.table is not None]
        items = [ITEM_TABLE] if any(f.kind == "item" for f in self.features) else []
        return tuple(dict.fromkeys(items + keyed))

    def family(self, family: str) -> tuple[Feature, ...]:
        """The features of one family (id, context, ad, behaviour, text), any model."""
        return tuple(f for f in self.features if f.family == family)

    @property
    def families(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.family for f in self.features))

    @classmethod
    def from_dict(cls, spec: Mapping[str, Any]) -> FeatureSpec:
        """Strict: an unknown key is an error; a missing optional key takes its default."""
        _unknown("feature spec", spec, SPEC_KEYS)
        defaults = cls(features=())
        return cls(
            features=tuple(Feature.from_dict(e) for e in spec["features"]),
            labels=tuple(spec.get("labels", defaults.labels)),
            meta=tuple(spec.get("meta", defaults.meta)),
            has_conversion=bool(spec.get("has_conversion", defaults.has_conversion)),
            has_text=bool(spec.get("has_text", defaults.has_text)),
            priors=dict(spec.get("priors", {})),
            split=SplitBounds.from_dict(spec.get("split", {})),
            rows=dict(spec.get("rows", {})),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [f.to_dict() for f in self.features],
            "labels": list(self.labels),
            "meta": list(self.meta),
            "has_conversion": self.has_conversion,
            "has_text": self.has_text,
            "priors": dict(self.priors),
            "split": self.split.to_dict(),
            "rows": dict(self.rows),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        return cls.from_dict(json.loads(text))

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeatureSpec:
        return cls.from_json(Path(path).read_text(encoding="utf-8"))
