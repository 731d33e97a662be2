"""Readers that turn each supported source into raw item and interaction frames.

A reader returns `RawTables`: items and interactions as pandas frames of raw
values plus `_file` and `_line` columns naming where each row came from. Rows
that cannot even be parsed (malformed JSON lines) are rejected by the reader;
every other check happens once, in `learn_tf.data.ingest`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from learn_tf.data.report import TableLog


@dataclass
class RawTables:
    """Raw rows of one source, before validation."""

    items: pd.DataFrame  # item_id + any ITEM_TEXT_FIELDS, _file, _line
    interactions: pd.DataFrame  # user_id, item_id, timestamp, rating, _file, _line
    # Whether `items` is a real catalogue (False: derived from interaction ids).
    has_catalogue: bool = True
    description: str = ""


Reader = Callable[..., RawTables]
