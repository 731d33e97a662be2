"""Tests for ingestion: each source format on small files, and every bad-row kind."""

import gzip
import json
import os

import pandas as pd
import pytest

from learn_tf.config import DataConfig, InteractionColumns, ItemColumns, SyntheticConfig
from learn_tf.data import schema
from learn_tf.data.ingest import IngestError, ingest, read_ingested

META = [
    {"asin": "A1", "title": "Microscope slides", "brand": "LabCo", "category": ["Science", "Lab"], "price": "$9.99"},
    {"asin": "A2", "title": "Beaker set", "brand": "GlassWorks", "category": ["Science"],
     "description": ["Borosilicate", "glass"]},
    {"asin": "A3", "title": "", "brand": "NoName", "category": ["Tools"]},  # no title -> fallback from fields
    {"asin": "A4"},  # nothing at all -> "Item A4"
    {"asin": "A5", "title": "Pipette"},
    {"title": "orphan without asin"},  # missing_item_id
    {"asin": "A1", "title": "duplicate of A1"},  # duplicate_item_id
]
REVIEWS = [
    {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 100, "overall": 5.0},
    {"reviewerID": "U1", "asin": "A2", "unixReviewTime": 200, "overall": 4.0},
    {"reviewerID": "U1", "asin": "A3", "unixReviewTime": 300, "overall": 3.0},
    {"reviewerID": "U2", "asin": "A2", "unixReviewTime": 100, "overall": 4.0},
    {"reviewerID": "U2", "asin": "A4", "unixReviewTime": 150},
    {"reviewerID": "U2", "asin": "A5", "unixReviewTime": 150, "overall": 2.0},
    {"asin": "A1", "unixReviewTime": 100},  # missing_user_id
    {"reviewerID": "U3", "unixReviewTime": 100},  # missing_item_id
    {"reviewerID": "U3", "asin": "A1", "unixReviewTime": "yesterday"},  # bad_timestamp
    {"reviewerID": "U3", "asin": "A1", "unixReviewTime": 5, "overall": "great"},  # bad_rating
    {"reviewerID": "U3", "asin": "ZZZ", "unixReviewTime": 100},  # unknown_item
    {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 100, "overall": 5.0},  # duplicate
]


def _write_jsonl(path, rows, extra_lines=(), gz=False):
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    data = ("\n".join(lines) + "\n").encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


@pytest.mark.parametrize("gz", [False, True])
def test_amazon_counts_every_bad_row_kind(tmp_path, gz):
    suffix = ".json.gz" if gz else ".json"
    reviews, meta = tmp_path / f"reviews{suffix}", tmp_path / f"meta{suffix}"
    _write_jsonl(reviews, REVIEWS, extra_lines=["{not json", "[1, 2]", ""], gz=gz)
    _write_jsonl(meta, META, extra_lines=['{"asin": "A9", "title": "broken'], gz=gz)
    cfg = DataConfig(source="amazon", reviews_path=str(reviews), meta_path=str(meta), max_rejected_fraction=0.9)
    out = str(tmp_path / "out")
    res = ingest(cfg, out, write_tfrecords=False, echo=False)

    items_t = res.report["tables"]["items"]
    assert items_t["rows_in"] == len(META) + 1
    assert items_t["rejected"] == {"duplicate_item_id": 1, "malformed_json": 1, "missing_item_id": 1}
    assert items_t["kept"] == 5
    assert items_t["notes"]["text_fallback"] == 2
    inter_t = res.report["tables"]["interactions"]
    assert inter_t["rows_in"] == len(REVIEWS) + 2  # the blank line is not a row
    assert inter_t["rejected"] == {
        "bad_rating": 1, "bad_timestamp": 1, "duplicate": 1, "malformed_json": 2,
        "missing_item_id": 1, "missing_user_id": 1, "unknown_item": 1,
    }
    assert inter_t["kept"] == 6
    # Examples name the file and line.
    ex = inter_t["examples"]["bad_timestamp"][0]
    assert ex["where"] == f"reviews{suffix}:9" and "timestamp" in ex["detail"]
    assert inter_t["examples"]["malformed_json"][0]["where"] == f"reviews{suffix}:13"

    items, inter = read_ingested(out)
    assert list(items.columns) == [f.name for f in schema.ITEMS_SCHEMA]
    by_id = items.set_index("item_id")
    assert by_id.loc["A1", "title"] == "Microscope slides"  # first row wins over the duplicate
    assert by_id.loc["A1", "category"] == "Science, Lab"
    assert by_id.loc["A2", "description"] == "Borosilicate glass"
    assert by_id.loc["A3", "title"] == "brand: NoName; category: Tools" and by_id.loc["A3", "text_fallback"]
    assert by_id.loc["A4", "title"] == "Item A4"
    assert sorted(inter["user_id"].unique()) == ["U1", "U2"]
    assert inter["rating"].isna().sum() == 1  # A4 review has no rating
    # Nothing lost: every rejected row is in rejects.jsonl.
    with open(os.path.join(out, schema.REJECTS_FILE)) as f:
        rejects = [json.loads(line) for line in f]
    assert len(rejects) == items_t["rejected_total"] + inter_t["rejected_total"]
    with open(os.path.join(out, schema.REPORT_FILE)) as f:
        assert json.load(f)["summary"]["interactions"] == 6


def test_too_many_rejects_stops_with_readable_error(tmp_path):
    reviews, meta = tmp_path / "r.json", tmp_path / "m.json"
    _write_jsonl(meta, META[:2])
    _write_jsonl(reviews, [{"reviewerID": "U", "asin": "NOPE", "unixReviewTime": i} for i in range(9)]
                 + [{"reviewerID": "U", "asin": "A1", "unixReviewTime": 1}])
    cfg = DataConfig(source="amazon", reviews_path=str(reviews), meta_path=str(meta), max_rejected_fraction=0.5)
    with pytest.raises(IngestError, match=r"9 of 10 interaction rows rejected .* unknown_item"):
        ingest(cfg, str(tmp_path / "out"), write_tfrecords=False, echo=False)
    # The report is still written so the user can see what went wrong.
    assert os.path.exists(tmp_path / "out" / schema.REPORT_FILE)


def test_missing_input_file_names_it(tmp_path):
    cfg = DataConfig(source="amazon", reviews_path=str(tmp_path / "r.json"), meta_path=str(tmp_path / "nope.json"))
    with pytest.raises(FileNotFoundError, match="nope.json"):
        ingest(cfg, str(tmp_path / "out"), echo=False)


def _csv_cfg(tmp_path, fmt="csv", items=True, **kw):
    return DataConfig(
        source=fmt,
        interactions_path=str(tmp_path / f"ratings.{fmt}"),
        items_path=str(tmp_path / f"products.{fmt}") if items else None,
        interaction_columns=InteractionColumns(user_id="customer", item_id="sku", timestamp="when", rating="stars"),
        item_columns=ItemColumns(item_id="sku", title="name", brand="maker") if items else None,
        max_rejected_fraction=0.9,
        **kw,
    )


RATINGS = pd.DataFrame(
    {
        "customer": ["c1", "c1", "c2", "", "c2", "c3"],
        "sku": ["s1", "s2", "s1", "s1", "s9", "s2"],
        "when": ["2020-01-01 10:00:00", "2020-01-02 10:00:00", "2020-01-01 09:00:00", "2020-01-01 09:00:00",
                 "2020-01-03 00:00:00", "not a date"],
        "stars": ["5", "4", "3", "1", "2", "5"],
    }
)
PRODUCTS = pd.DataFrame({"sku": ["s1", "s2", "s3"], "name": ["Kettle", "", "Mug"], "maker": ["Acme", "Brew", ""]})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tabular_sources_with_column_mapping(tmp_path, fmt):
    for frame, name in ((RATINGS, "ratings"), (PRODUCTS, "products")):
        path = tmp_path / f"{name}.{fmt}"
        frame.to_csv(path, index=False) if fmt == "csv" else frame.to_parquet(path)
    cfg = _csv_cfg(tmp_path, fmt, timestamp_format="%Y-%m-%d %H:%M:%S")
    res = ingest(cfg, str(tmp_path / "out"), write_tfrecords=False, echo=False)
    t = res.report["tables"]["interactions"]
    assert t["rejected"] == {"bad_timestamp": 1, "missing_user_id": 1, "unknown_item": 1}
    assert t["examples"]["bad_timestamp"][0]["where"] == f"ratings.{fmt}:6"
    assert res.interactions["timestamp"].tolist() == [1577872800, 1577959200, 1577869200]
    assert res.interactions["rating"].tolist() == [5.0, 4.0, 3.0]
    assert res.report["tables"]["items"]["notes"]["text_fallback"] == 1
    assert res.items.set_index("item_id").loc["s2", "title"] == "brand: Brew"


def test_tabular_without_items_file_derives_catalogue(tmp_path):
    RATINGS.to_csv(tmp_path / "ratings.csv", index=False)
    cfg = _csv_cfg(tmp_path, items=False, timestamp_format="iso")
    res = ingest(cfg, str(tmp_path / "out"), write_tfrecords=False, echo=False)
    assert set(res.items["item_id"]) == {"s1", "s2", "s9"}
    assert res.items["text_fallback"].all()
    assert res.report["tables"]["items"]["notes"]["catalogue_derived_from_interactions"] == 3


def test_tabular_unknown_column_is_named(tmp_path):
    RATINGS.rename(columns={"when": "time"}).to_csv(tmp_path / "ratings.csv", index=False)
    with pytest.raises(ValueError, match=r"column 'when' \(config data.interaction_columns.timestamp\) not found"):
        ingest(_csv_cfg(tmp_path, items=False), str(tmp_path / "out"), echo=False)


def test_drop_items_without_interactions_is_counted(tmp_path):
    RATINGS.to_csv(tmp_path / "ratings.csv", index=False)
    PRODUCTS.to_csv(tmp_path / "products.csv", index=False)
    cfg = _csv_cfg(tmp_path, timestamp_format="%Y-%m-%d %H:%M:%S", keep_items_without_interactions=False)
    res = ingest(cfg, str(tmp_path / "out"), write_tfrecords=False, echo=False)
    assert res.report["tables"]["items"]["rejected"] == {"no_interactions": 1}
    assert "s3" not in set(res.items["item_id"])


def test_synthetic_source_and_tfrecords(tmp_path):
    import tensorflow as tf

    cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(num_items=30, num_users=10, seed=1))
    out = str(tmp_path / "out")
    res = ingest(cfg, out, echo=False)
    assert res.report["tables"]["interactions"]["rejected_total"] == 0
    n_items = sum(1 for _ in tf.data.TFRecordDataset(os.path.join(out, schema.ITEMS_TFRECORD)))
    recs = list(tf.data.TFRecordDataset(os.path.join(out, schema.INTERACTIONS_TFRECORD)).take(1))
    ex = tf.train.Example.FromString(recs[0].numpy())
    assert n_items == 30
    assert ex.features.feature["user_id"].bytes_list.value[0] == res.interactions["user_id"][0].encode()
    assert ex.features.feature["timestamp"].int64_list.value[0] == res.interactions["timestamp"][0]


def test_movielens100k_from_installed_recbole(tmp_path):
    res = ingest(DataConfig(source="movielens100k"), str(tmp_path / "ml"), write_tfrecords=False, echo=False)
    s = res.report["summary"]
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100000)
    assert res.report["tables"]["interactions"]["rows_in"] == 100000
    toy = res.items.set_index("item_id").loc["1"]
    assert (toy["title"], toy["year"], toy["genres"]) == ("Toy Story", "1995", "Animation, Children's, Comedy")


def test_two_ingests_give_byte_identical_outputs_tfrecords_included(tmp_path):
    cfg = DataConfig(source="synthetic", synthetic=SyntheticConfig(num_items=40, num_users=12, seed=3))
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    ingest(cfg, a, echo=False)
    ingest(cfg, b, echo=False)
    names = sorted(os.path.relpath(os.path.join(d, f), a) for d, _, fs in os.walk(a) for f in fs)
    assert schema.ITEMS_TFRECORD in names and schema.INTERACTIONS_TFRECORD in names
    for rel in names:
        with open(os.path.join(a, rel), "rb") as fa, open(os.path.join(b, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel
