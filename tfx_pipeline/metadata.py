"""ML Metadata connections: a sqlite file (local default) or a mysql:// URL, for the runner and lineage."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlparse

from ml_metadata.proto import metadata_store_pb2
from tfx.orchestration import metadata

from learn_tf.config import Config


def connection_config(metadata_path: str, create_dirs: bool = True) -> metadata_store_pb2.ConnectionConfig:
    """ML Metadata connection for `metadata_path`: a sqlite file, or `mysql://user:password@host:port/database`.

    The MySQL password may be left out of the URL and given in $LEARN_MLMD_PASSWORD.

    Raises:
      ValueError: a mysql:// URL without host or database.
    """
    if metadata_path.startswith("mysql://"):
        u = urlparse(metadata_path)
        database = u.path.lstrip("/")
        if not u.hostname or not database:
            raise ValueError(f"pipeline.metadata_path {metadata_path!r}: expected mysql://user:password@host:port/db")
        return metadata.mysql_metadata_connection_config(
            host=u.hostname, port=u.port or 3306, database=database, username=unquote(u.username or "root"),
            password=unquote(u.password) if u.password else os.environ.get("LEARN_MLMD_PASSWORD", ""))
    if create_dirs:
        os.makedirs(os.path.dirname(os.path.abspath(metadata_path)), exist_ok=True)  # ML Metadata: local sqlite
    return metadata.sqlite_metadata_connection_config(metadata_path)


def readonly_sqlite_config(metadata_path: str) -> metadata_store_pb2.ConnectionConfig:
    """A read-only connection to an existing sqlite ML Metadata file (for queries after a run)."""
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = metadata_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    return config


def metadata_config(cfg: Config) -> Any:
    """The config's ML Metadata: sqlite at `cfg.resolved_metadata_path()` (default) or a mysql:// URL."""
    return connection_config(cfg.resolved_metadata_path())
