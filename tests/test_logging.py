"""The run logs: the optional Weights & Biases logger, exercised with the real client offline."""
from __future__ import annotations

import struct
import time

import pytest


def _wandb_history(run_file) -> list[dict]:
    """History rows of a ``.wandb`` file (a LevelDB-style log of protobuf records: 7-byte file
    header, 32 KiB blocks, each chunk ``crc u32, length u16, type u8``; 1 = full, 4 = last)."""
    from wandb.proto import wandb_internal_pb2 as pb
    data = run_file.read_bytes()
    pos, block, buf, rows = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        buf += data[pos:pos + n]
        pos += n
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({"/".join(i.nested_key) or i.key: i.value_json
                             for i in record.history.item})
    return rows


def test_wandb_logger_records_every_metric_offline(tmp_path, monkeypatch):
    from dprl.base.logging import MetricsLogger
    monkeypatch.setenv("WANDB_MODE", "offline")     # the real client, no network
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = MetricsLogger(tmp_path, tensorboard=False, wandb_project="dprl-test",
                           config={"agent": "dql", "seed": 3})
    logger.log("offline", 10, 0, 1.0, {"critic/loss": 0.5}, global_step=10)
    logger.log("online", 20, 7, 2.0, {"critic/loss": 0.25, "eval/return_mean": 12.0},
               global_step=20)
    assert dict(logger.wandb.config) == {"agent": "dql", "seed": 3}
    logger.close()
    (run_file,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    # wandb's service process finishes writing the file after finish() returns.
    deadline = time.monotonic() + 60
    while len(rows := _wandb_history(run_file)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [(r["_step"], r["critic/loss"]) for r in rows] == [("10", "0.5"), ("20", "0.25")]
    assert float(rows[1]["eval/return_mean"]) == 12.0 and rows[1]["env_steps"] == "7"
    # metrics.csv is written alongside, whatever else logs.
    assert (tmp_path / "metrics.csv").read_text().count("\n") == 3


def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    from dprl.base.logging import MetricsLogger
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = MetricsLogger(tmp_path, tensorboard=False, wandb_project="dprl-test")
    first.log("offline", 10, 0, 1.0, {"critic/loss": 0.5}, global_step=10)
    run_id = first.wandb.id
    first.close()
    resumed = MetricsLogger(tmp_path, tensorboard=False, wandb_project="dprl-test", resume_step=10)
    assert resumed.wandb.id == run_id
    resumed.close()
    # Another run directory is another W&B run.
    (tmp_path / "other").mkdir()
    other = MetricsLogger(tmp_path / "other", tensorboard=False, wandb_project="dprl-test")
    assert other.wandb.id != run_id
    other.close()


def test_wandb_project_without_the_client_names_the_extra(tmp_path, monkeypatch):
    import builtins

    from dprl.base.logging import MetricsLogger
    real_import = builtins.__import__

    def no_wandb(name, *args, **kwargs):
        if name == "wandb":
            raise ImportError("No module named 'wandb'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_wandb)
    with pytest.raises(ImportError, match=r"pip install -e '\.\[wandb\]'"):
        MetricsLogger(tmp_path, tensorboard=False, wandb_project="dprl-test")
