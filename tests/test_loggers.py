"""--log wandb,mlflow: the W&B offline run and the MLflow file store hold the same scalars, at the same steps, as
the run's TensorBoard events (read back from each one's own files)."""
import json

import pytest
from helpers import main_in_process, write_cifar10

pytestmark = pytest.mark.slow  # end-to-end runs: deselect with -m "not slow"


def tensorboard_scalars(tb) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tb), size_guidance={"scalars": 0})
    events.Reload()
    return {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}


def wandb_records(path) -> list[bytes]:
    """The records of a W&B transaction log: a 7-byte header (":W&B", magic, version), then LevelDB's log format
    in 32 KiB blocks (each chunk: crc32c 4 bytes, length 2, type 1: full / first / middle / last)."""
    data, block, records, pending, offset = path.read_bytes(), 32768, [], b"", 7
    assert data[:4] == b":W&B"
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # the block's tail is padding
            offset += block - offset % block
            continue
        length, kind = int.from_bytes(data[offset + 4:offset + 6], "little"), data[offset + 6]
        chunk = data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    return records


def wandb_scalars(run) -> dict:
    from wandb.proto import wandb_internal_pb2

    (path,) = run.glob("wandb/offline-run-*/run-*.wandb")
    found = {}
    for data in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(data)
        if record.WhichOneof("record_type") != "history":
            continue
        row = {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in record.history.item}
        axis = "epoch" if "epoch" in row else "global_step"
        found.update({(k, row[axis]): v for k, v in row.items() if k.startswith(("epoch/", "step/"))})
    return found


def mlflow_scalars(run) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient((run / "mlruns").resolve().as_uri())
    run_id = (run / "mlflow-id").read_text().strip()
    keys = client.get_run(run_id).data.metrics
    return {(k, m.step): m.value for k in keys for m in client.get_metric_history(run_id, k)}


def test_wandb_and_mlflow_hold_the_scalars_of_tensorboard(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    write_cifar10(tmp_path / "data")
    run = tmp_path / "t"
    code, err = main_in_process("teacher", "train", "--teacher", "wrn-10-1", "--at", "pgd", "--steps", 1,
                                "--data-dir", tmp_path / "data", "--val-size", 50, "--limit", 100, "--epochs", 2,
                                "--batch-size", 25, "--n", 10, "--log-every", 1, "--log", "wandb,mlflow",
                                "--out", run)
    assert code == 0, err
    tb = tensorboard_scalars(run / "tb")
    assert any(k.startswith("epoch/") for k, _ in tb) and any(k.startswith("step/") for k, _ in tb)
    for other in (wandb_scalars(run), mlflow_scalars(run)):
        assert set(other) == set(tb)
        assert all(other[key] == pytest.approx(value, rel=1e-6, abs=1e-7) for key, value in tb.items())


def test_an_unknown_logger_is_one_line(tmp_path):
    write_cifar10(tmp_path / "data")
    code, err = main_in_process("teacher", "train", "--data-dir", tmp_path / "data", "--log", "neptune",
                                "--out", tmp_path / "t")
    assert code == 2 and "--log neptune: give one or more of tensorboard, wandb, mlflow" in err
    assert not (tmp_path / "t").exists()
