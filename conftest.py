"""Root pytest configuration: `--run_large` for tests on real weights and data."""

import learn_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)
import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run_large", action="store_true", default=False,
                     help="also run tests marked large (real LLM weights, full datasets)")


def pytest_collection_modifyitems(config: pytest.Config, items: list) -> None:
    if config.getoption("--run_large"):
        return
    skip = pytest.mark.skip(reason="large test: pass --run_large to run it")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_decoder_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random Llama3 keras-hub preset (byte-level BPE tokenizer), built once per session."""
    from learn_tf.embeddings.testing import make_tiny_decoder_preset

    return make_tiny_decoder_preset(str(tmp_path_factory.mktemp("tiny_decoder")))


@pytest.fixture(scope="session")
def tiny_encoder_preset(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny random BERT keras-hub preset (WordPiece tokenizer), built once per session."""
    from learn_tf.embeddings.testing import make_tiny_encoder_preset

    return make_tiny_encoder_preset(str(tmp_path_factory.mktemp("tiny_encoder")))


def write_tiny_run_config(directory: str, preset: str) -> str:
    """A tiny end-to-end config (synthetic data, the given LLM preset, tiny towers) written into `directory`."""
    import os

    import yaml

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "tiny.yaml")) as f:
        raw = yaml.safe_load(f)
    raw["output_dir"] = os.path.join(directory, "run")
    raw["embedding"] = {"model": preset, "template": "movielens", "max_tokens": 32, "batch_size": 16}
    raw["model"] = {"d_model": 16, "num_layers": 1, "num_heads": 2, "ff_dim": 32, "out_dim": 8, "dropout": 0.0}
    raw["train"] = {"max_len": 12, "num_targets": 2, "num_query_positions": 2, "samples_per_user": 2,
                    "batch_size": 32, "epochs": 2, "patience": 5}
    raw["serving"] = {"max_k": 50, "warmup_requests": 2, "poll_seconds": 0.2, "num_threads": 8}
    path = os.path.join(directory, "tiny.yaml")
    with open(path, "w") as f:
        yaml.safe_dump(raw, f)
    return path


@pytest.fixture
def tiny_run_config(tmp_path: "os.PathLike[str]", tiny_decoder_preset: str) -> str:
    """Path of a tiny end-to-end config whose output_dir is under this test's tmp_path."""
    return write_tiny_run_config(str(tmp_path), tiny_decoder_preset)
