"""`learn serve` settings from the config's serving section (REST port, batching), CLI flags overriding them;
`add-items` reading the trained catalogue through the io layer."""

from __future__ import annotations

from typing import Any

import pytest

from learn_app.cli import build_parser
from learn_app.serving_commands import rest_port, trained_item_ids
from learn_tf.config import ConfigError, ServingConfig, load_config
from learn_tf.utils import io
from serving.batching import BatchingParameters
from serving.layout import write_models_config
from serving.server import batching_from_config

MINIMAL = "name: t\ndata:\n  source: movielens100k\n"


def _load(tmp_path: Any, serving: str) -> Any:
    path = tmp_path / "cfg.yaml"
    path.write_text(MINIMAL + "serving:\n" + serving)
    return load_config(str(path))


def test_serving_keys_load_with_defaults(tmp_path: Any) -> None:
    sv = _load(tmp_path, "  port: 9000\n").serving
    assert (sv.rest_port, sv.enable_batching, sv.batching_parameters_file, sv.max_batch_size,
            sv.batch_timeout_micros, sv.num_batch_threads, sv.max_enqueued_batches) == (
        None, False, None, None, None, None, None)
    sv = _load(tmp_path, "  rest_port: 9100\n  enable_batching: true\n  batching_parameters_file: b.txt\n"
               "  max_batch_size: 32\n  batch_timeout_micros: 0\n  num_batch_threads: 1\n"
               "  max_enqueued_batches: 8\n").serving
    assert (sv.rest_port, sv.enable_batching, sv.batching_parameters_file, sv.max_batch_size,
            sv.batch_timeout_micros, sv.num_batch_threads, sv.max_enqueued_batches) == (
        9100, True, "b.txt", 32, 0, 1, 8)
    assert _load(tmp_path, "  rest_port: -1\n").serving.rest_port == -1
    assert _load(tmp_path, "  port: 8500\n").serving.compute_nice is None  # the server's default (by batching)
    assert _load(tmp_path, "  compute_nice: 0\n").serving.compute_nice == 0


@pytest.mark.parametrize("text, message", [
    ("  rest_port: -2\n", "key 'serving.rest_port' must be in [-1, 65535]"),
    ("  rest_port: 70000\n", "key 'serving.rest_port' must be in [-1, 65535]"),
    ("  port: 9000\n  rest_port: 9000\n", "key 'serving.rest_port' must differ from 'serving.port'"),
    ("  port: 70000\n", "key 'serving.port' must be <= 65535"),
    ("  rest_port: '8501'\n", "key 'serving.rest_port' must be an integer"),
    ("  enable_batching: yes please\n", "key 'serving.enable_batching' must be true or false"),
    ("  max_batch_size: 0\n", "key 'serving.max_batch_size' must be >= 1"),
    ("  num_batch_threads: 0\n", "key 'serving.num_batch_threads' must be >= 1"),
    ("  max_enqueued_batches: 0\n", "key 'serving.max_enqueued_batches' must be >= 1"),
    ("  batch_timeout_micros: -1\n", "key 'serving.batch_timeout_micros' must be >= 0"),
    ("  batching_parameters_file: ''\n", "key 'serving.batching_parameters_file' must be a path"),
    ("  batching: {}\n", "unknown key 'serving.batching'"),
    ("  compute_nice: 20\n", "key 'serving.compute_nice' must be in [0, 19]"),
    ("  compute_nice: -1\n", "key 'serving.compute_nice' must be in [0, 19]"),
])
def test_bad_serving_keys_are_named(tmp_path: Any, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="cfg.yaml") as e:
        _load(tmp_path, text)
    assert message in str(e.value)


def test_rest_port_flag_overrides_config() -> None:
    assert rest_port(8500) == 8501 and rest_port(0) == 0
    assert rest_port(8500, configured=9100) == 9100
    assert rest_port(8500, configured=-1) is None
    assert rest_port(8500, flag=9200, configured=9100) == 9200
    assert rest_port(8500, flag=-1, configured=9100) is None
    assert rest_port(8500, flag=9200, configured=-1) == 9200


def test_batching_from_config_and_flags(tmp_path: Any) -> None:
    base = str(tmp_path / "base")
    write_models_config(base, names=["a"])  # the exporter's batching_parameters.txt: 64 / 2000 / 2 / 256
    exported = BatchingParameters(max_batch_size=64, batch_timeout_micros=2000, max_enqueued_batches=256,
                                  num_batch_threads=2)
    assert batching_from_config(base, ServingConfig()) is None
    assert batching_from_config(base, ServingConfig(), enable=True) == exported
    on = ServingConfig(enable_batching=True)
    assert batching_from_config(base, on) == exported
    assert batching_from_config(base, on, enable=False) is None  # --no-enable-batching wins
    tuned = ServingConfig(enable_batching=True, max_batch_size=16, batch_timeout_micros=500)
    assert batching_from_config(base, tuned) == BatchingParameters(16, 500, 256, 2)
    other = tmp_path / "other.txt"
    other.write_text("max_batch_size { value: 8 }\nnum_batch_threads { value: 1 }\n")
    from_file = ServingConfig(enable_batching=True, batching_parameters_file=str(other), max_enqueued_batches=3)
    assert batching_from_config(base, from_file) == BatchingParameters(8, 0, 3, 1)
    # The flag's file replaces the configured one; the configured keys still apply on top of it.
    assert batching_from_config(base, tuned, parameters_file=str(other)) == BatchingParameters(16, 500, 10, 1)
    with pytest.raises(ValueError, match="needs batching"):
        batching_from_config(base, ServingConfig(), parameters_file=str(other))
    bad = ServingConfig(enable_batching=True, batching_parameters_file=str(tmp_path / "missing.txt"))
    with pytest.raises(OSError):
        batching_from_config(base, bad)


def test_serve_flags_default_to_the_config() -> None:
    parser = build_parser()
    args = parser.parse_args(["serve", "--config", "c.yaml"])
    assert (args.rest_port, args.enable_batching, args.batching_parameters_file) == (None, None, None)
    assert parser.parse_args(["serve", "--config", "c.yaml", "--no-enable-batching"]).enable_batching is False
    assert parser.parse_args(["serve", "--config", "c.yaml", "--enable-batching"]).enable_batching is True


def test_trained_item_ids_go_through_the_io_layer() -> None:
    # ram:// is TensorFlow's in-memory file system: plain open() cannot read it, tf.io.gfile (as gs://) can.
    model_dir = "ram://serving_commands_test/model"
    io.write_bytes(f"{model_dir}/catalogue.txt", "a\nb é\n\nc\n".encode("utf-8"))
    assert trained_item_ids(model_dir) == {"a", "b é", "c"}
