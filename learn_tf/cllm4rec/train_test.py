"""Training: the frozen backbone stays byte-identical, the right tables move, each step is traced once."""

import numpy as np
import pytest

from learn_tf.cllm4rec import store
from learn_tf.cllm4rec.documents import Prompts
from learn_tf.cllm4rec.train import Schedule, Trainer, TrainData
from learn_tf.cllm4rec.vocab import FrozenLM


@pytest.fixture(scope="module")
def setup(tiny_decoder_preset: str):
    lm = FrozenLM.from_preset(tiny_decoder_preset)
    model, builder = store.build(lm, [str(i) for i in range(12)], [str(u) for u in range(5)], Prompts(), 8)
    rng = np.random.default_rng(0)
    histories = [(u, rng.choice(12, size=int(rng.integers(2, 9)), replace=False)) for u in range(5)]
    data = TrainData([builder.collaborative(u, h) for u, h in histories],
                     builder.content(list(range(12)), [f"Movie {i} ({1990 + i})" for i in range(12)]), histories)
    return lm, model, builder, data


def _tables(model) -> list[np.ndarray]:
    return [w.numpy().copy() for w in model.trainable()]


def test_content_warmup_moves_only_the_content_tables(setup) -> None:
    lm, model, builder, data = setup
    before = _tables(model)
    Trainer(model, builder, Schedule(content_warmup_epochs=1, alternating_epochs=0, finetune_epochs=0,
                                     batch_size=4, max_batch_tokens=64)).fit(data, log=lambda _: None)
    after = _tables(model)
    np.testing.assert_array_equal(after[0], before[0])  # collaborative users
    np.testing.assert_array_equal(after[1], before[1])  # collaborative items
    assert not np.array_equal(after[3], before[3])  # content items


def test_frozen_weights_are_byte_identical_after_training(setup) -> None:
    lm, model, builder, data = setup
    frozen = [w.numpy().tobytes() for w in lm.frozen_weights()]
    before = _tables(model)
    trainer = Trainer(model, builder, Schedule(content_warmup_epochs=1, alternating_epochs=2, finetune_epochs=2,
                                               batch_size=2, max_batch_tokens=64, finetune_learning_rate=1e-3))
    records = trainer.fit(data, on_epoch=lambda r: {"seen": r["phase"]}, log=lambda _: None)
    assert [r["phase"] for r in records] == ["content_warmup", "pretrain", "pretrain", "finetune", "finetune"]
    assert records[-1]["seen"] == "finetune"
    assert all(a == w.numpy().tobytes() for a, w in zip(frozen, lm.frozen_weights()))
    after = _tables(model)
    # Collaborative users/items and content items move; with item documents only (no reviews or user
    # profiles) no content document holds a user token, so the content user table keeps its prior.
    assert [not np.array_equal(a, b) for a, b in zip(before, after)] == [True, True, False, True]
    # Batches of many shapes, yet each (phase, loss) step was traced exactly once.
    assert trainer.traces == {"pretrain:content": 1, "pretrain:collaborative": 1, "finetune:recommend": 1,
                              "finetune:content": 1}


def test_store_round_trip(setup, tmp_path) -> None:
    lm, model, _, _ = setup
    store.save(model, str(tmp_path), "tiny", [str(i) for i in range(12)], [str(u) for u in range(5)], Prompts(), 8)
    again, _, meta = store.load(str(tmp_path), lm)
    for a, b in zip(model.trainable(), again.trainable()):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert meta["user_ids"][4] == "4"


def test_schedule_rejects_an_unknown_target() -> None:
    with pytest.raises(ValueError, match="finetune_target"):
        Schedule(finetune_target="visible")
