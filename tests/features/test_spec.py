"""FeatureSpec: the `feature_spec.json` contract read and written byte for byte, column groups
by kind, model and family, and strict parsing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from features.spec import Feature, FeatureSpec, SplitBounds

# the shapes of entry the features stage writes, in its key order
ENTRIES = [
    {"name": "c_ad_id", "kind": "categorical", "source": "ad_id", "cardinality": 318,
     "family": "id"},
    {"name": "c_device", "kind": "categorical", "source": "device", "cardinality": 4,
     "family": "context"},
    {"name": "n_log_price", "kind": "numeric", "source": "log_price", "family": "ad"},
    {"name": "n_user_ctr_7d", "kind": "numeric", "source": "user_ctr_7d", "family": "behaviour"},
    {"name": "e_ad_text", "kind": "embedding", "dim": 384, "source": "embeddings/ads.emb_fused",
     "family": "text", "models": ["neural"]},
    {"name": "t_ad_pc00", "kind": "numeric", "source": "pca(ad text, 16, fit on train ads)",
     "family": "text", "models": ["lightgbm"]},
    {"name": "t_user_ad_cos", "kind": "numeric", "source": "cosine", "family": "text"},
]  # fmt: skip
SPEC = {
    "features": ENTRIES,
    "labels": ["click", "conversion"],
    "meta": ["impression_id", "ts", "split", "click", "conversion"],
    "has_conversion": True,
    "has_text": True,
    "priors": {"ctr": 0.021935583532864757, "cvr": 0.14084507042253522},
    "split": {
        "split_mode": "time",
        "valid_start": "2026-03-20T00:00:00",
        "test_start": "2026-03-25T00:00:00",
        "test_end": "2026-03-30T00:00:00",
    },
    "rows": {"train": 12947, "valid": 3541, "test": 3512},
}


def test_round_trip_is_byte_identical(tmp_path: Path) -> None:
    original = json.dumps(SPEC, indent=2)  # how the features stage wrote it before FeatureSpec
    (tmp_path / "in.json").write_text(original)
    spec = FeatureSpec.load(tmp_path / "in.json")
    spec.save(tmp_path / "out.json")
    assert (tmp_path / "out.json").read_text() == original
    assert FeatureSpec.from_json(spec.to_json()) == spec
    given = dict(SPEC, split={"split_mode": "given"}, labels=["click"], has_conversion=False)
    assert FeatureSpec.from_dict(given).to_json() == json.dumps(given, indent=2)


def test_fields_are_typed() -> None:
    spec = FeatureSpec.from_dict(SPEC)
    assert spec.labels == ("click", "conversion") and spec.has_conversion and spec.has_text
    assert spec.split == SplitBounds(
        "time", None, "2026-03-20T00:00:00", "2026-03-25T00:00:00", "2026-03-30T00:00:00"
    )
    assert spec.priors["ctr"] == pytest.approx(0.0219, abs=1e-4) and spec.rows["test"] == 3512
    ad = spec.features[0]
    assert ad == Feature("c_ad_id", "categorical", "ad_id", "id", cardinality=318)
    assert spec.features[4].dim == 384 and spec.features[4].models == ("neural",)


def test_columns_by_kind_and_model() -> None:
    spec = FeatureSpec.from_dict(SPEC)
    gbm, net = spec.by_kind("lightgbm"), spec.by_kind("neural")
    assert [f.name for f in gbm["categorical"]] == ["c_ad_id", "c_device"]
    assert [f.name for f in gbm["numeric"]] == [
        "n_log_price",
        "n_user_ctr_7d",
        "t_ad_pc00",
        "t_user_ad_cos",
    ]
    assert gbm["embedding"] == ()
    assert [f.name for f in net["numeric"]] == ["n_log_price", "n_user_ctr_7d", "t_user_ad_cos"]
    assert [f.name for f in net["embedding"]] == ["e_ad_text"]
    # categorical, numeric, embedding: the order of a FeatureMatrix
    assert spec.names("neural") == ["c_ad_id", "c_device", *[f.name for f in net["numeric"]],
                                    "e_ad_text"]  # fmt: skip
    assert len(spec.names()) == len(ENTRIES)  # no model: every column
    with pytest.raises(ValueError, match="kind must be one of"):
        spec.columns("dense")


def test_columns_by_family() -> None:
    spec = FeatureSpec.from_dict(SPEC)
    assert spec.families == ("id", "context", "ad", "behaviour", "text")
    assert [f.name for f in spec.family("text")] == ["e_ad_text", "t_ad_pc00", "t_user_ad_cos"]
    assert [f.name for f in spec.family("behaviour")] == ["n_user_ctr_7d"]
    assert spec.family("nothing") == ()


def test_strict_parsing_names_the_problem() -> None:
    with pytest.raises(ValueError, match=r"feature spec: unknown key\(s\) \['extra'\]"):
        FeatureSpec.from_dict(SPEC | {"extra": 1})
    bad_entry = dict(ENTRIES[2], width=3)
    with pytest.raises(ValueError, match=r"feature 'n_log_price': unknown key\(s\) \['width'\]"):
        FeatureSpec.from_dict({"features": [bad_entry]})
    with pytest.raises(ValueError, match="kind must be one of"):
        Feature("x", "sparse", "x", "id")
    with pytest.raises(ValueError, match="cardinality is for categorical"):
        Feature("x", "categorical", "x", "id")
    with pytest.raises(ValueError, match="dim is for embedding"):
        Feature("x", "numeric", "x", "ad", dim=4)
    with pytest.raises(ValueError, match=r"split: unknown key\(s\) \['train_end'\]"):
        FeatureSpec.from_dict({"features": [], "split": {"train_end": "x"}})


def test_defaults_for_a_minimal_spec() -> None:
    spec = FeatureSpec.from_dict({"features": ENTRIES[:1]})
    assert spec.has_conversion and not spec.has_text and spec.labels == ("click", "conversion")
    assert spec.split.test_end is None and spec.rows == {}
