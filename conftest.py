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


@pytest.fixture
def tiny_run_config(tmp_path: "os.PathLike[str]", tiny_decoder_preset: str) -> str:
    """Path of a tiny end-to-end config whose output_dir is under this test's tmp_path."""
    from learn_tf.testing import write_tiny_run_config

    return write_tiny_run_config(str(tmp_path), tiny_decoder_preset)
