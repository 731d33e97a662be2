"""Strategy selection from TF_CONFIG, and two worker processes on 127.0.0.1 training one model together."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from learn_tf.training import distribute

WORKER_TIMEOUT = 600


def _tf_config(index: int, n: int = 2, chief: bool = False) -> dict[str, str]:
    cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(n)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:1999"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}


def test_strategy_kind_follows_tf_config_and_devices():
    assert distribute.strategy_kind({}, num_gpus=0) == "none"
    assert distribute.strategy_kind({"TF_CONFIG": ""}, num_gpus=1) == "none"
    assert distribute.strategy_kind({}, num_gpus=2) == "mirrored"
    assert distribute.strategy_kind(_tf_config(0), num_gpus=0) == "multi_worker"
    assert distribute.strategy_kind(_tf_config(0, n=1), num_gpus=0) == "none"  # one task: nothing to sync


def test_chief_is_the_chief_task_else_worker_zero():
    assert distribute.is_chief({})
    assert distribute.is_chief(_tf_config(0)) and not distribute.is_chief(_tf_config(1))
    assert not distribute.is_chief(_tf_config(0, chief=True))
    chief = {"TF_CONFIG": json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1"]}, "task": {"type": "chief"}})}
    assert distribute.is_chief(chief)


def test_no_tf_config_means_no_strategy_and_the_same_towers(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    if distribute.strategy_kind() != "none":
        pytest.skip("this machine has several GPUs")
    sentinel = object()
    with distribute.distributed_towers(sentinel) as towers:
        assert towers is sentinel  # the single-process path trains the caller's towers, no scope
    assert distribute.worker_output_dir("out") == "out"


def _train_worker(out: str) -> None:
    """One worker: the tiny config's towers and settings on synthetic data; writes weights and losses."""
    import learn_tf  # noqa: F401  (Keras 2 for TFRS)
    import tensorflow as tf

    from learn_tf.config import SplitConfig, SyntheticConfig
    from learn_tf.data.splits import make_splits
    from learn_tf.data.synthetic import generate_synthetic
    from learn_tf.models.catalogue import Catalogue
    from learn_tf.models.towers import LearnTowers
    from learn_tf.config import TrainConfig
    from learn_tf.training.trainer import train

    # `learn train` builds its data and towers (TensorFlow ops) before `train`: the strategy already exists,
    # created when learn_tf.training.distribute was imported.
    assert distribute.strategy_kind() == "multi_worker" and "strategy" in distribute._STRATEGY
    tf.constant(1.0) + 1.0
    items, inter = generate_synthetic(SyntheticConfig(num_items=120, num_users=60, num_topics=6,
                                                      mean_sequence_length=12, min_sequence_length=4, seed=7))
    splits = make_splits(items, inter, SplitConfig(cold_item_fraction=0.0))
    cat = Catalogue(np.sort(items["item_id"].to_numpy()))
    rng = np.random.default_rng(0)
    content = rng.normal(size=(len(cat), 8)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    seqs = [cat.indices(g["item_id"].tolist())
            for _, g in splits.train.sort_values(["user_id", "position"]).groupby("user_id")]
    # Synchronous workers must run the same number of steps: an even number of full batches per epoch.
    seqs = [s for s in seqs if len(s) >= 2]
    seqs = seqs[: len(seqs) // 16 * 16]
    settings = TrainConfig(sampling="dense", max_len=12, num_targets=2, num_query_positions=2, samples_per_user=2,
                           batch_size=8, epochs=3, optimizer="adamw", schedule="cosine", learning_rate=3e-3,
                           weight_decay=0.01, warmup_fraction=0.05, patience=5, seed=0)
    # Each worker initialises its towers differently (as unseeded `learn train` runs do): training starts
    # from the chief's weights everywhere.
    tf.keras.utils.set_random_seed(json.loads(os.environ["TF_CONFIG"])["task"]["index"])
    towers = LearnTowers(len(cat), 8, d_model=16, num_layers=1, num_heads=2, ff_dim=32, out_dim=8, dropout=0.0,
                         max_len=12, content_table=content)
    result = train(towers, cat, seqs, splits.cases("validation"), settings, verbose=0)
    np.savez(out, *towers.get_weights())
    with open(out + ".json", "w", encoding="utf-8") as f:
        json.dump({"losses": [h["loss"] for h in result.history], "chief": distribute.is_chief()}, f)


@pytest.mark.e2e
def test_two_workers_on_localhost_end_with_identical_weights_and_a_falling_loss(tmp_path):
    from learn_tf.utils.emulators import free_port

    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
               "CUDA_VISIBLE_DEVICES": ""}
        log = open(tmp_path / f"worker{i}.log", "w")
        procs.append((subprocess.Popen([sys.executable, os.path.abspath(__file__), str(tmp_path / f"w{i}.npz")],
                                       env=env, stdout=log, stderr=subprocess.STDOUT), log))
    try:
        for p, log in procs:
            p.wait(timeout=WORKER_TIMEOUT)
            log.close()
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [(tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2)]
    assert [p.returncode for p, _ in procs] == [0, 0], "\n\n".join(logs)
    w0, w1 = (np.load(tmp_path / f"w{i}.npz") for i in range(2))
    assert len(w0.files) == len(w1.files) > 0
    for k in w0.files:
        np.testing.assert_allclose(w0[k], w1[k], rtol=0, atol=1e-6, err_msg=k)
    runs = [json.loads((tmp_path / f"w{i}.npz.json").read_text()) for i in range(2)]
    assert [r["chief"] for r in runs] == [True, False]
    for r in runs:
        assert len(r["losses"]) == 3 and r["losses"][-1] < r["losses"][0], r["losses"]


if __name__ == "__main__":  # one worker process of the test above
    _train_worker(sys.argv[1])
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown (collective ops' threads)
