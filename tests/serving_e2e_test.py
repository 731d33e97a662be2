"""End to end: train -> `learn export` -> `learn serve` -> stock TF Serving stubs / `learn query` -> `learn add-items`."""

import hashlib
import json
import os
import re
import select
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from learn_app.cli import main
from learn_tf.config import load_config


def _digest(directory):
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if os.path.isfile(path) and name.startswith("weights"):
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def _wait_until(cond, timeout, what):
    """Polls `cond` until it holds; fails the test naming `what` after `timeout` seconds (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def _served_version(target, model):
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    with grpc.insecure_channel(target) as ch:
        stub = model_service_pb2_grpc.ModelServiceStub(ch)
        req = get_model_status_pb2.GetModelStatusRequest()
        req.model_spec.name = model
        status = stub.GetModelStatus(req, timeout=10)
    return max(v.version for v in status.model_version_status
               if v.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE)


@pytest.mark.e2e
def test_export_serve_query_and_onboard_cold_items(tmp_path, tiny_run_config, capsys):
    from learn_tf.models.catalogue import TowerScorer
    from learn_tf.training.jobs import load_towers
    from serving.client import predict, retrieve

    cfg_path = tiny_run_config
    for cmd in (["ingest", "--no-tfrecords"], ["embed"], ["train", "--model", "learn"], ["export"]):
        assert main([cmd[0], "--config", cfg_path, *cmd[1:]]) == 0, cmd
    cfg = load_config(cfg_path)
    base = cfg.resolved_model_base()
    model_dir = cfg.layout().model("learn_a")
    weights_before = _digest(model_dir)
    towers, cat, meta = load_towers(model_dir)
    scorer = TowerScorer(towers, cat, int(meta["max_len"]))

    # `learn serve` itself, on a free port (0), as a separate process; it prints where it listens.
    server = subprocess.Popen([sys.executable, "-m", "learn_app.cli", "serve", "--config", cfg_path, "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        target = None
        deadline = time.monotonic() + 300  # loading four SavedModels on a busy 2-core machine
        while target is None and time.monotonic() < deadline:
            ready, _, _ = select.select([server.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            line = server.stdout.readline()
            if not line and server.poll() is not None:
                raise AssertionError(f"learn serve exited with {server.returncode}")
            m = re.match(r"serving .* on (127\.0\.0\.1:\d+)$", line.strip())
            target = m.group(1) if m else None
        assert target, "learn serve did not report its address"
        # The three kinds of models, over the stock stubs, equal the in-process Keras towers.
        histories = [list(cat.item_ids[[3, 7, 11]]), list(cat.item_ids[[20, 21]]), list(cat.item_ids[[50]])]
        width = max(map(len, histories))
        padded = np.array([h + [""] * (width - len(h)) for h in histories], dtype=object).astype(bytes)
        out = predict(target, "learn_user", {"history": padded})
        assert np.allclose(out["user_embedding"], scorer.user_vectors(histories), atol=1e-5)
        out = predict(target, "learn_item", {"item_ids": np.array(cat.item_ids[:4]).astype(bytes)})
        assert np.allclose(out["item_embedding"], scorer.item_matrix[:4], atol=1e-5)
        scores = scorer.score(histories)
        for r, h in enumerate(histories):
            scores[r, [cat.index[i] - 1 for i in h]] = -np.inf
        want = [[cat.item_ids[i] for i in np.argsort(-s, kind="stable")[:10]] for s in scores]
        exact = retrieve(target, histories, k=10, exclude_history=True, model="learn_retrieval_bf")
        assert [[i for i, _ in row] for row in exact] == want
        approx = retrieve(target, histories, k=10, exclude_history=True, model="learn_retrieval")
        overlap = np.mean([len({i for i, _ in a} & set(w)) / 10 for a, w in zip(approx, want)])
        assert overlap >= 0.9, overlap

        # `learn query` accepts exact titles and prints ranked titles with scores.
        items = __import__("pandas").read_parquet(cfg.layout().items)
        titled = items.set_index("item_id").loc[histories[0]]
        capsys.readouterr()
        assert main(["query", "--config", cfg_path, "--server", target, "--k", "5",
                     "--history", ",".join(titled["title"])]) == 0
        printed = capsys.readouterr().out
        assert "top 5 from learn_retrieval" in printed
        assert printed.count("[") >= 5 and want[0][0] in printed
        assert main(["query", "--config", cfg_path, "--server", target, "--history", "No Such Title"]) == 1
        assert "neither an item id nor an exact title" in capsys.readouterr().err

        # Cold-start onboarding: one new item copies the text of the top item for histories[0]
        # (so it must score exactly as high), one has new text (so the frozen LLM runs).
        top = items.set_index("item_id").loc[want[0][0]]
        new_items = tmp_path / "new_items.jsonl"
        copy = {f: str(top[f]) for f in ("title", "year", "genres")}
        new_items.write_text(json.dumps({"item_id": "new_copy", **copy}) + "\n"
                             + json.dumps({"item_id": "new_text", "title": "A brand new film about gardens",
                                           "year": "2026", "genres": "Documentary"}) + "\n")
        assert main(["add-items", "--config", cfg_path, str(new_items)]) == 0
        printed = capsys.readouterr().out
        assert "2 new items" in printed and "published version 2" in printed
        # Each model loads its new version on its own; wait for every one the checks below use, each
        # with its own generous deadline (the machine may be busy), and assert it.
        for model in ("learn_user", "learn_retrieval_bf", "learn_retrieval"):
            _wait_until(lambda: _served_version(target, model) == 2, 300, f"{model} version 2 to be served")
        [row] = retrieve(target, [histories[0]], k=5, exclude_history=True, model="learn_retrieval_bf")
        ids = [i for i, _ in row]
        assert set(ids[:2]) == {want[0][0], "new_copy"}, ids
        assert abs(row[0][1] - row[1][1]) < 1e-5
        [row] = retrieve(target, [histories[0]], k=10, exclude_history=True, model="learn_retrieval")
        assert "new_copy" in [i for i, _ in row]
        # A history made of the new items is known to the user tower now.
        [row] = retrieve(target, [["new_text", "new_copy"]], k=5, exclude_history=False,
                         model="learn_retrieval_bf")
        assert len(row) == 5
        # No retraining happened: the trained weights are untouched.
        assert _digest(model_dir) == weights_before
        # Adding the same ids again is refused, naming one of them.
        assert main(["add-items", "--config", cfg_path, str(new_items)]) == 1
        assert "already in the catalogue" in capsys.readouterr().err
        # A bad request gets INVALID_ARGUMENT, and the server keeps answering.
        with pytest.raises(grpc.RpcError) as err:
            predict(target, "learn_retrieval_bf", {"history": padded, "k": np.array([0, 1, 1], np.int32),
                                                   "exclude_history": np.array([True] * 3)})
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "k must be >= 1" in err.value.details()
        assert retrieve(target, histories[:1], k=3, model="learn_retrieval_bf")
    finally:
        server.terminate()  # SIGTERM: graceful shutdown
        assert server.wait(timeout=60) == 0
    tf.keras.backend.clear_session()
