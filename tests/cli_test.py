"""End-to-end tests of the `learn` command line on the tiny config."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from learn_app.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny.yaml")


def test_help_lists_subcommands():
    out = subprocess.run([sys.executable, "-m", "learn_app.cli", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for cmd in ("ingest", "split", "stats", "demo"):
        assert cmd in out


def test_ingest_writes_tables_report_and_identical_splits(tmp_path, capsys):
    ra, rb = str(tmp_path / "a"), str(tmp_path / "b")  # run roots; the data lives in <root>/data
    a, b = os.path.join(ra, "data"), os.path.join(rb, "data")
    assert main(["ingest", "--config", TINY, "--output", ra]) == 0
    printed = capsys.readouterr().out
    assert "Ingest report" in printed and "rows in" in printed and "cold_item" in printed
    for rel in ("items.parquet", "interactions.parquet", "ingest_report.json", "rejects.jsonl",
                "tfrecords/items.tfrecord", "tfrecords/interactions.tfrecord",
                "split/train.parquet", "split/eval_cases.parquet", "split/item_stats.parquet",
                "split/split_manifest.json"):
        assert os.path.exists(os.path.join(a, rel)), rel
    with open(os.path.join(a, "ingest_report.json")) as f:
        report = json.load(f)
    assert report["tables"]["items"]["rows_in"] == 120
    assert main(["ingest", "--config", TINY, "--output", rb, "--no-tfrecords"]) == 0
    for rel in ("split/train.parquet", "split/eval_cases.parquet", "split/item_stats.parquet",
                "split/split_manifest.json", "items.parquet", "interactions.parquet"):
        with open(os.path.join(a, rel), "rb") as fa, open(os.path.join(b, rel), "rb") as fb:
            assert fa.read() == fb.read(), rel
    # Re-split alone (over the same ingested data, after removing the split): same bytes again.
    with open(os.path.join(a, "split/eval_cases.parquet"), "rb") as fa:
        before = fa.read()
    shutil.rmtree(os.path.join(b, "split"))
    assert main(["split", "--config", TINY, "--output", rb]) == 0
    with open(os.path.join(b, "split/eval_cases.parquet"), "rb") as fc:
        assert before == fc.read()


def test_output_means_the_run_root_in_every_subcommand(tmp_path, tiny_run_config):
    root = str(tmp_path / "elsewhere")
    for cmd in (["ingest", "--no-tfrecords"], ["stats"], ["embed"]):
        assert main([cmd[0], "--config", tiny_run_config, "--output", root, *cmd[1:]]) == 0, cmd
    for rel in ("data/items.parquet", "data/split/train.parquet", "data/stats/stats.json", "embeddings"):
        assert os.path.exists(os.path.join(root, rel)), rel
    assert not os.path.exists(tmp_path / "run")  # nothing under the config's own output_dir


def test_step_commands_run_the_whole_job(tmp_path, tiny_run_config, capsys):
    # `learn demo` is the TFX pipeline (tfx_pipeline/e2e_test.py); the per-step commands call the same functions.
    for cmd in (["ingest"], ["stats"], ["embed"], ["train"], ["evaluate"], ["export"]):
        assert main([cmd[0], "--config", tiny_run_config, *cmd[1:]]) == 0, cmd
    out = capsys.readouterr().out
    assert "[learn export] version 1" in out
    png = tmp_path / "run" / "data" / "stats" / "stats.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(tmp_path / "run" / "data" / "stats" / "stats.json") as f:
        assert json.load(f)["items"] == 120
    with open(tmp_path / "run" / "results" / "results.json") as f:
        assert {"learn_a", "learn_c", "sasrec", "popularity", "content_knn"} <= set(json.load(f)["models"])


def test_config_error_exits_2_with_message(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndata:\n  source: movielens100k\n  colour: red\n")
    assert main(["ingest", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'data.colour'" in err and str(bad) in err


def test_stats_without_ingest_says_what_to_run(tmp_path, capsys):
    assert main(["stats", "--config", TINY, "--output", str(tmp_path / "nothing")]) == 1
    assert "run `learn ingest` first" in capsys.readouterr().err


@pytest.mark.large
def test_ingest_on_movielens_prints_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "learn_app.cli", "ingest", "--config",
                           os.path.join(ROOT, "configs", "movielens.yaml"), "--output", str(tmp_path)],
                          capture_output=True, text=True, check=True)
    assert "kept: 943 users, 1,682 items, 100,000 interactions" in proc.stdout
    assert "100,000" in proc.stdout and "1,682" in proc.stdout


def test_ingest_embed_train_evaluate_on_tiny_data(tmp_path, tiny_run_config, capsys):
    cfg = tiny_run_config
    for cmd in (["ingest", "--no-tfrecords"], ["embed"], ["train", "--model", "learn", "--model", "sasrec"],
                ["evaluate"]):
        assert main([cmd[0], "--config", cfg, *cmd[1:]]) == 0, cmd
    out = capsys.readouterr().out
    assert "best validation NDCG@10" in out and "popularity" in out
    results_dir = tmp_path / "run" / "results"
    with open(results_dir / "results.json") as f:
        results = json.load(f)
    assert set(results["models"]) == {"learn_a", "sasrec", "content_knn", "popularity"}
    for protocol in ("masked", "unmasked"):
        seg = results["models"]["learn_a"][protocol]["segments"]
        assert seg["cold_item"]["count"] + seg["head_item"]["count"] + seg["long_tail_item"]["count"] == 60
    for name in ("results.md", "recall_at_k.png", "segments.png"):
        assert (results_dir / name).exists()
    assert (tmp_path / "run" / "models" / "learn_a" / "curves.png").exists()


def test_own_protocol_is_cllm4rec_only(tmp_path, capsys):
    assert main(["train", "--config", TINY, "--output", str(tmp_path), "--own-protocol", "--model", "sasrec"]) == 1
    err = capsys.readouterr().err
    assert "--own-protocol is CLLM4Rec's protocol" in err
    assert not os.path.exists(os.path.join(str(tmp_path), "models"))
