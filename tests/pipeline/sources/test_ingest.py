"""Ingest adapters: handcrafted rows of each format (good and malformed) -> raw tables, errors,
quarantine; and the real samples in ../shared/data (skipped when that folder is absent)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from features.schema import RAW_TABLES
from features.split import SplitConfig
from pipeline.config import ConfigError, DataConfig, Experiment
from pipeline.io import MANIFEST, DataError, check_schema
from pipeline.sources import ingest
from pipeline.sources.ingest_config import IngestConfig
from pipeline.stage import Layout

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
LENIENT = IngestConfig(max_bad_fraction=1.0)


def make_exp(tmp_path: Path, source: str, path: Path, **ingest_kw: object) -> Experiment:
    return Experiment(
        name=f"t_{source}",
        data=DataConfig(source=source, path=str(path), root=str(tmp_path / "data")),
        ingest=IngestConfig(**ingest_kw),
        split=SplitConfig(random_seed=3, valid_fraction=0.25, test_fraction=0.25),
    )


def raw(exp: Experiment) -> tuple[dict[str, pl.DataFrame], dict]:
    root = Layout.of(exp).raw
    manifest = json.loads((root / MANIFEST).read_text())
    tables = {name: pl.read_parquet(root / f"{name}.parquet") for name in RAW_TABLES}
    for name, schema in RAW_TABLES.items():
        check_schema(tables[name], schema, name)
    return tables, manifest


def quarantine(exp: Experiment) -> pl.DataFrame:
    return pl.read_parquet(Layout.of(exp).quarantine / f"ingest_{exp.data.source}.parquet")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------- Criteo


def criteo_row(label: str = "0", i3: str = "5", c1: str = "68fd1e64") -> str:
    ints = ["1", "", i3, "-2"] + ["0"] * 9
    cats = [c1, ""] + [f"{k:08x}" for k in range(24)]
    return "\t".join([label, *ints, *cats])


def test_criteo_maps_columns_and_splits_by_file(tmp_path):
    folder = tmp_path / "criteo"
    write(folder / "train.tsv", "\n".join([criteo_row("1"), criteo_row(), criteo_row()]) + "\n")
    write(folder / "dev.tsv", criteo_row("1") + "\n")
    write(folder / "test.tsv", criteo_row() + "\n")
    exp = make_exp(tmp_path, "criteo", folder)
    summary = ingest.run(exp)
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (5, 5, 0)
    assert imps["click"].to_list() == [1, 0, 0, 1, 0]
    assert imps["num_i1"].to_list() == [1.0] * 5 and imps["num_i2"].null_count() == 5
    assert imps["num_i4"][0] == -2.0 and imps.schema["num_i4"] == pl.Float64
    assert imps["cat_c1"][0] == "68fd1e64" and imps["cat_c2"].null_count() == 5
    assert [c for c in imps.columns if c.startswith("cat_")] == [f"cat_c{i}" for i in range(1, 27)]
    assert imps["split"].to_list()[3:] == ["valid", "test"]
    assert imps["ts"].is_sorted() and imps["ts"].n_unique() == 5
    assert imps["conversion"].null_count() == 5 and imps["user_id"].null_count() == 5
    assert tables["ads"].height == tables["users"].height == tables["behaviour"].height == 0
    assert manifest["source"] == "criteo" and manifest["split_mode"] == "files"
    assert manifest["has_text"] is manifest["has_conversion"] is manifest["has_timestamp"] is False
    assert not (Layout.of(exp).quarantine / "ingest_criteo.parquet").exists()


def criteo_malformed(tmp_path: Path) -> Path:
    rows = [
        criteo_row("1"),
        criteo_row(),
        criteo_row(i3="abc"),  # line 3: non-numeric
        "\t".join(["0"] * 39),  # line 4: 39 fields
        criteo_row(label="2"),  # line 5: label not 0/1
        criteo_row(),
    ]
    bad_bytes = criteo_row(c1="abQQ").encode().replace(b"QQ", b"\xff\xfe")  # line 7
    data = ("\n".join(rows) + "\n").encode() + bad_bytes + b"\n"
    return write(tmp_path / "criteo.tsv", data)


def test_criteo_quarantines_malformed_rows_with_exact_accounting(tmp_path):
    exp = make_exp(tmp_path, "criteo", criteo_malformed(tmp_path), max_bad_fraction=1.0)
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (7, 3, 4)
    bad = quarantine(exp).sort("line")
    assert bad["line"].to_list() == [3, 4, 5, 7]
    assert bad["reason"].to_list() == [
        "non-numeric value in column 'I3'",
        "wrong column count (expected 40)",
        "column 'label' is not 0/1",
        "invalid UTF-8 bytes in column 'C1'",
    ]
    tables, manifest = raw(exp)
    assert tables["impressions"].height == 3
    assert manifest["split_mode"] == "random" and manifest["ingest"]["rows_quarantined"] == 4


def test_criteo_too_many_bad_rows_is_one_line_error_and_writes_nothing(tmp_path):
    exp = make_exp(tmp_path, "criteo", criteo_malformed(tmp_path))  # default max 1%
    with pytest.raises(DataError) as err:
        ingest.run(exp)
    msg = str(err.value)
    assert "\n" not in msg and "criteo.tsv" in msg and "4 of 7 rows" in msg
    assert "non-numeric value in column 'I3'" in msg and "line 3" in msg
    assert not Layout.of(exp).raw.exists() and not Layout.of(exp).quarantine.exists()


def test_on_bad_rows_error_fails_on_a_single_bad_row(tmp_path):
    rows = [criteo_row()] * 200 + [criteo_row(i3="x")]
    path = write(tmp_path / "c.tsv", "\n".join(rows) + "\n")
    ingest.run(make_exp(tmp_path, "criteo", path))  # 1 of 201 < 1%: quarantined
    with pytest.raises(DataError, match="1 of 201 rows"):
        ingest.run(make_exp(tmp_path, "criteo", path, on_bad_rows="error"))


@pytest.mark.parametrize("content", ["", "\n\n"])
def test_empty_file_is_an_error(tmp_path, content):
    exp = make_exp(tmp_path, "criteo", write(tmp_path / "empty.tsv", content))
    with pytest.raises(DataError, match=r"empty\.tsv: empty file"):
        ingest.run(exp)
    assert not Layout.of(exp).raw.exists()


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=re.escape("data.source = 'simulated'")):
        ingest.run(make_exp(tmp_path, "simulated", tmp_path))
    with pytest.raises(ConfigError, match=re.escape("data.path")):
        ingest.run(make_exp(tmp_path, "criteo", tmp_path / "nope"))
    with pytest.raises(ValueError, match="split_mode must be one of"):  # IngestConfig checks it
        make_exp(tmp_path, "criteo", tmp_path, split_mode="sometimes")
    path = write(tmp_path / "c.tsv", criteo_row() + "\n")
    with pytest.raises(ConfigError, match="'files'"):
        ingest.run(make_exp(tmp_path, "criteo", path, split_mode="files"))


# ---------------------------------------------------------------- Avazu

AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,"
    "app_category,device_id,device_ip,device_model,device_type,device_conn_type,"
    "C14,C15,C16,C17,C18,C19,C20,C21"
)


def avazu_row(click="0", hour="14102100", site="1fbe01fe", app="ecad2386", dev="a99f214a"):
    return (
        f"100001,{click},{hour},1005,0,{site},f3845767,28905ebd,{app},7801e8d9,07d7df22,"
        f"{dev},96809ac8,711ee120,1,0,15704,320,50,1722,0,35,-1,79"
    )


def test_avazu_header_optional_time_user_and_placement(tmp_path):
    folder = tmp_path / "avazu"
    write(folder / "train.csv", "\n".join([AVAZU_HEADER, avazu_row("1"), avazu_row()]) + "\n")
    app_row = avazu_row(hour="14102213", site="85f751fd", app="9c13b419", dev="0000beef")
    write(folder / "dev.csv", app_row + "\n")
    write(folder / "test.csv", avazu_row(hour="1410xx00") + "\n" + avazu_row() + "\n")
    exp = make_exp(tmp_path, "avazu", folder, max_bad_fraction=1.0)
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (5, 4, 1)
    assert quarantine(exp)["reason"].to_list() == ["column 'hour' is not YYMMDDHH"]
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps["ts"].to_list()[1:3] == [datetime(2014, 10, 21), datetime(2014, 10, 22, 13)]
    assert imps["placement"].to_list()[1:3] == ["site:1fbe01fe", "app:9c13b419"]
    anonymous = int("96809ac8711ee120", 16) - (1 << 64)  # device_ip + device_model, wrapped
    assert imps["user_id"].to_list()[1:3] == [anonymous, 0xBEEF]
    assert imps["cat_c14"][0] == "15704" and imps["cat_site_id"][0] == "1fbe01fe"
    assert imps["device"][0] == "1" and imps["position"][0] == 0
    assert imps["split"].to_list() == ["train", "train", "valid", "test"]
    assert sorted(tables["users"]["user_id"]) == sorted({anonymous, 0xBEEF})
    assert manifest["has_timestamp"] is True and manifest["split_mode"] == "files"


# ---------------------------------------------------------------- Ali-CCP

ALI_HEADER = "click,purchase,101,205,206,207,216,124,125,129,301,D508"


def test_ali_ccp_click_and_purchase(tmp_path):
    rows = [
        "1,1,7,30,4,9,2,1,3,5,1,0.5",
        "0,0,7,31,4,9,,1,3,5,2,0.0",
        "0,1,8,30,4,9,2,2,4,6,1,0.1",  # purchase without a click
        "1,0,8,32,5,10,3,2,4,6,1,",
    ]
    path = write(tmp_path / "ali_ccp_train_sample.csv", "\n".join([ALI_HEADER, *rows]) + "\n")
    exp = make_exp(tmp_path, "ali_ccp", path, max_bad_fraction=1.0)
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (4, 3, 1)
    assert quarantine(exp)["reason"].to_list() == ["column 'purchase' is 1 without a click"]
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps["click"].to_list() == [1, 0, 1] and imps["conversion"].to_list() == [1, 0, 0]
    assert imps["user_id"].to_list() == [7, 7, 8] and imps["ad_id"].to_list() == [30, 31, 32]
    assert imps["cat_301"].to_list() == ["1", "2", "1"] and imps["num_508"][2] is None
    assert "cat_206" not in imps.columns and "split" in imps.columns
    ads = tables["ads"].sort("ad_id")
    assert ads["advertiser_id"].to_list() == [9, 9, 10] and ads["category"].to_list() == [
        "4"
    ] * 2 + ["5"]
    assert tables["users"].sort("user_id")["gender"].to_list() == ["1", "2"]
    assert manifest["has_conversion"] is True and manifest["split_mode"] == "random"


def test_ali_ccp_missing_label_column_is_an_error(tmp_path):
    path = write(tmp_path / "a.csv", "click,101,205\n1,2,3\n")
    with pytest.raises(DataError, match=r"missing columns \['purchase'\]"):
        ingest.run(make_exp(tmp_path, "ali_ccp", path))


# ---------------------------------------------------------------- MIND

NEWS = [
    "N1\tsports\tgolf\tTiger wins\tA long abstract.\turl\t"
    '[{"Label": "Tiger Woods", "Type": "P"}]\t[]',
    "N2\tnews\tpolitics\tVote today\t\turl\t[]\t[]",
    "N2\tnews\tpolitics\tDuplicate\t\turl\t[]\t[]",
]
LOGS = [
    "10\tU5\t11/12/2019 2:14:46 PM\tN1 N9\tN1-1 N2-0 N3-0",
    "11\tU6\t11/11/2019 9:00:00 AM\t\tN2-1",
    "12\tU5\t11/13/2019 1:00:00 AM\tN1 N9\tN9-x",  # bad label
]


def test_mind_text_impressions_and_history(tmp_path):
    folder = tmp_path / "mind"
    write(folder / "news.tsv", "\n".join(NEWS) + "\n")
    write(folder / "behaviors.tsv", "\n".join(LOGS) + "\n")
    exp = make_exp(tmp_path, "mind", folder, max_bad_fraction=1.0)
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (6, 4, 2)
    assert sorted(quarantine(exp)["reason"].to_list()) == [
        "column 'impressions' is not a list of <news id>-<0|1>",
        "duplicate news_id",
    ]
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps.select("ad_id", "click", "position", "user_id", "request_id").rows() == [
        (1, 1, 1, 5, 10), (2, 0, 2, 5, 10), (3, 0, 3, 5, 10), (2, 1, 1, 6, 11),
    ]  # fmt: skip
    ads = tables["ads"].sort("ad_id")
    assert ads["ad_id"].to_list() == [1, 2, 3, 9]
    assert ads["title"].to_list() == ["Tiger wins", "Vote today", None, None]
    assert ads["description"].to_list()[:2] == ["A long abstract.", None]
    assert ads["keywords"][0].to_list() == ["golf", "Tiger Woods"]
    beh = tables["behaviour"]
    assert beh.select("user_id", "ad_id", "event").rows() == [(5, 1, "click"), (5, 9, "click")]
    assert beh["ts"].max() < imps["ts"].min() and beh["ts"].is_sorted()
    assert sorted(tables["users"]["user_id"]) == [5, 6]
    assert manifest["has_text"] is True and manifest["split_mode"] == "time"
    assert "split" not in imps.columns

    exp = make_exp(tmp_path, "mind", folder, max_bad_fraction=1.0, only_with_text=True)
    ingest.run(exp)
    assert raw(exp)[0]["impressions"]["ad_id"].to_list() == [1, 2, 2]


# ---------------------------------------------------------------- iPinYou


def test_ipinyou_decodes_one_hot_rows(tmp_path):
    folder = tmp_path / "ipinyou"
    featindex = ["weekday:2\t0", "weekday:3\t1", "slotid:s9\t2", "creative:11908\t3",
                 "creative:other\t4", "IP:60.22.69.*\t5"]  # fmt: skip
    write(folder / "featindex.fm.txt", "\n".join(featindex) + "\n")
    train = ["1 0:1 2:1 3:1 5:1", "0 1:1 2:1 4:1 5:1", "0 1:1 2:1 9:1 5:1", "0 1:1 2:1"]
    write(folder / "train.fm.txt", "\n".join(train) + "\n")
    write(folder / "test.fm.txt", "0 0:1 2:1 3:1 5:1\n")
    exp = make_exp(tmp_path, "ipinyou", folder, max_bad_fraction=1.0)
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (5, 3, 2)
    assert sorted(quarantine(exp)["reason"].to_list()) == [
        "feature index not in the dictionary",
        "wrong column count (expected 5)",
    ]
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps["click"].to_list() == [1, 0, 0]
    assert imps["ad_id"].to_list() == [11908, None, 11908]
    assert imps["placement"].to_list() == ["s9"] * 3
    assert imps["cat_weekday"].to_list() == ["2", "3", "2"] and imps["cat_ip"][0] == "60.22.69.*"
    assert imps["split"][-1] == "test" and manifest["split_mode"] == "files"
    assert tables["ads"].rows() and tables["ads"]["ad_id"].to_list() == [11908]

    write(folder / "featindex.fm.txt", "\n".join([*featindex, "broken"]) + "\n")
    with pytest.raises(DataError, match=re.escape("featindex.fm.txt")):
        ingest.run(exp)


# ---------------------------------------------------------------- generic

GENERIC = dict(
    user_id="uid", ad_id="ad", title="headline", category="cat", timestamp="when",
    label_conversion="bought", categorical_columns=("site",), numeric_columns=("bid price",),
)  # fmt: skip


def test_generic_csv_mapping(tmp_path):
    text = (
        "when,uid,ad,headline,cat,site,bid price,click,bought\n"
        '2024-01-01T10:00:00,alice,A1,"Cheap, fast shoes",shoes,s1,0.5,1,1\n'
        "2024-01-02T10:00:00,bob,A2,Red hats,hats,s2,,0,0\n"
        "2024-01-02T11:00:00,alice,A1,,shoes,s1,x,0,0\n"  # bad number
        "yesterday,bob,A2,Red hats,hats,s2,1.0,0,0\n"  # bad timestamp
        "2024-01-03T10:00:00,carol,A1,,shoes,s3,2,1,0\n"
    )
    exp = make_exp(
        tmp_path, "generic", write(tmp_path / "log.csv", text), max_bad_fraction=1.0, **GENERIC
    )
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (5, 3, 2)
    assert sorted(quarantine(exp)["reason"].to_list()) == [
        "column 'when' is not a timestamp",
        "non-numeric value in column 'bid price'",
    ]
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps["user_id"].to_list() == [1, 2, 3] and imps["ad_id"].to_list() == [1, 2, 1]
    assert imps["ts"][0] == datetime(2024, 1, 1, 10) and imps["num_bid_price"].to_list()[:2] == [
        0.5,
        None,
    ]
    assert imps["cat_site"].to_list() == ["s1", "s2", "s3"] and imps["conversion"].to_list() == [
        1,
        0,
        0,
    ]
    ads = tables["ads"].sort("ad_id")
    assert ads["title"].to_list() == ["Cheap, fast shoes", "Red hats"]
    assert ads["category"].to_list() == ["shoes", "hats"]
    assert manifest["has_text"] and manifest["has_conversion"] and manifest["split_mode"] == "time"


def test_generic_parquet_split_column_and_integer_ids(tmp_path):
    frame = pl.DataFrame(
        {"u": [10, 11, 10, 12], "y": [0, 1, 0, 1], "part": ["train", "train", "valid", "test"]}
    )
    path = tmp_path / "log.parquet"
    frame.write_parquet(path)
    exp = make_exp(tmp_path, "generic", path, format="parquet", user_id="u", label_click="y",
                   split_column="part")  # fmt: skip
    ingest.run(exp)
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps["user_id"].to_list() == [10, 11, 10, 12] and imps["click"].to_list() == [0, 1, 0, 1]
    assert imps["split"].to_list() == ["train", "train", "valid", "test"]
    assert manifest["split_mode"] == "files" and manifest["has_text"] is False


def test_generic_random_split_is_seeded_and_missing_column_is_a_config_error(tmp_path):
    rows = "\n".join(f"{i % 2}" for i in range(400))
    path = write(tmp_path / "log.tsv", rows + "\n")
    kw = dict(format="tsv", has_header=False, column_names=("click",))
    first = make_exp(tmp_path, "generic", path, **kw)
    ingest.run(first)
    split = raw(first)[0]["impressions"]["split"]
    ingest.run(first)
    assert raw(first)[0]["impressions"]["split"].equals(split)
    assert 0.15 < (split == "test").mean() < 0.35 and set(split) == {"train", "valid", "test"}
    with pytest.raises(ConfigError, match=re.escape("ingest.user_id = 'who'")):
        ingest.run(make_exp(tmp_path, "generic", path, user_id="who", **kw))


# ---------------------------------------------------------------- the real samples


def shared(folder: str) -> Path:
    path = SHARED / folder
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path


@pytest.mark.parametrize(
    ("source", "folder", "rows", "clicks", "split_rows"),
    [
        (
            "criteo",
            "criteo-kaggle-8k",
            8000,
            1549 + 93 + 86,
            {"train": 7200, "valid": 409, "test": 391},
        ),
        ("avazu", "avazu-9k", 8999, 1397 + 86 + 80, {"train": 8087, "valid": 480, "test": 432}),
        ("ali_ccp", "ali-ccp-sample", 200, 7 + 3 + 2, {"train": 100, "valid": 50, "test": 50}),
    ],
)
def test_real_samples_match_their_source_figures(
    tmp_path, source, folder, rows, clicks, split_rows
):
    exp = make_exp(tmp_path, source, shared(folder))
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out, summary.rows_quarantined) == (rows, rows, 0)
    imps = raw(exp)[0]["impressions"]
    assert imps.height == rows and imps["click"].sum() == clicks
    counts = dict(imps.group_by("split").len().iter_rows())
    assert counts == split_rows
    if source == "ali_ccp":
        assert imps["conversion"].sum() == 3 and (imps["conversion"] <= imps["click"]).all()


def test_real_mind_sample(tmp_path):
    exp = make_exp(tmp_path, "mind", shared("mind-small-subset"))
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_quarantined) == (7000, 0)
    tables, manifest = raw(exp)
    imps = tables["impressions"]
    assert imps.height == 189_359 and imps["click"].sum() == 7_542
    assert tables["ads"].filter(pl.col("title").is_not_null()).height == 2000
    assert manifest["has_text"] is True


def test_real_ipinyou_sample(tmp_path):
    exp = make_exp(tmp_path, "ipinyou", shared("ipinyou-fnn-sample"))
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_quarantined) == (26_773 + 21_150, 0)
    imps = raw(exp)[0]["impressions"]
    test = imps.filter(pl.col("split") == "test")
    assert test.height == 21_150 and test["click"].sum() == 50
    assert imps.filter(pl.col("split") != "test")["click"].sum() == 255
    assert imps["cat_hour"].null_count() == 0


def test_generic_unix_and_hour_timestamps_and_max_rows(tmp_path):
    path = write(
        tmp_path / "log.csv", "t,h,click\n1700000000,23103114,1\n1700003600.5,23103115,0\n9,9,0\n"
    )
    exp = make_exp(tmp_path, "generic", path, timestamp="t", timestamp_format="unix", max_rows=2)
    summary = ingest.run(exp)
    assert (summary.rows_in, summary.rows_out) == (2, 2)
    ts = raw(exp)[0]["impressions"]["ts"].to_list()
    assert ts == [datetime(2023, 11, 14, 22, 13, 20), datetime(2023, 11, 14, 23, 13, 20, 500000)]
    exp = make_exp(tmp_path, "generic", path, timestamp="h", timestamp_format="%y%m%d%H",
                   max_bad_fraction=1.0)  # fmt: skip
    assert ingest.run(exp).rows_quarantined == 1  # "9" is not YYMMDDHH
    assert raw(exp)[0]["impressions"]["ts"][1] == datetime(2023, 10, 31, 15)
