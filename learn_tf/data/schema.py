"""The canonical tables every source is ingested into (see docs/data.md)."""

from __future__ import annotations

import pyarrow as pa

# Item text fields a prompt template may reference as `{field}`. All strings;
# a missing value is the empty string.
ITEM_TEXT_FIELDS: tuple[str, ...] = (
    "title", "year", "genres", "brand", "category", "description", "price",
)

ITEMS_SCHEMA = pa.schema(
    [pa.field("item_id", pa.string(), nullable=False)]
    + [pa.field(name, pa.string(), nullable=False) for name in ITEM_TEXT_FIELDS]
    + [pa.field("text_fallback", pa.bool_(), nullable=False)]
)

INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("item_id", pa.string(), nullable=False),
        pa.field("timestamp", pa.int64(), nullable=False),  # seconds since epoch
        pa.field("rating", pa.float64()),  # null when the source has none
        pa.field("row", pa.int64(), nullable=False),  # original row order (tie-break)
    ]
)

ITEMS_FILE = "items.parquet"
INTERACTIONS_FILE = "interactions.parquet"
REPORT_FILE = "ingest_report.json"
REJECTS_FILE = "rejects.jsonl"
ITEMS_TFRECORD = "tfrecords/items.tfrecord"
INTERACTIONS_TFRECORD = "tfrecords/interactions.tfrecord"
