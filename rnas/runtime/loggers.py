"""Where a run's scalars go besides metrics.jsonl and TensorBoard (``--log tensorboard,wandb,mlflow``): Weights &
Biases (offline unless WANDB_MODE says otherwise, its files under RUN/wandb) and MLflow (RUN/mlruns unless
MLFLOW_TRACKING_URI names a server). Each gets the same keys and steps as TensorBoard: ``step/*`` against the
global step, ``epoch/*`` against the epoch, and the resolved config once. A resumed run continues the same W&B /
MLflow run (its id is kept in the run directory)."""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from rnas.errors import UserError

LOGGERS = ("tensorboard", "wandb", "mlflow")


def parse_loggers(text: str) -> str:
    """``--log``: a comma-separated subset of LOGGERS (TensorBoard is always written)."""
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    unknown = [n for n in names if n not in LOGGERS]
    if unknown or not names:
        raise UserError(f"--log {text}: give one or more of {', '.join(LOGGERS)}, comma-separated")
    return ",".join(dict.fromkeys(["tensorboard", *names]))


def _run_id(run: Path, file: str, make) -> str:
    from rnas.runtime.rundir import atomic_write_text

    path = run / file
    if path.is_file():
        return path.read_text().strip()
    run_id = make()
    atomic_write_text(path, run_id + "\n")
    return run_id


class WandbSink:
    def __init__(self, run: Path, config: dict):
        try:
            import wandb
        except ImportError:
            raise UserError("--log wandb needs the optional extra: pip install 'rnas[wandb]'") from None
        os.environ.setdefault("WANDB_MODE", "offline")
        os.environ.setdefault("WANDB_SILENT", "true")
        run_id = _run_id(run, "wandb-id", lambda: uuid.uuid4().hex[:8])
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "rnas"), dir=str(run), id=run_id,
                              name=run.name, config=config, resume="allow",
                              settings=wandb.Settings(console="off", silent=True))
        for axis, pattern in (("epoch", "epoch/*"), ("global_step", "step/*")):
            self.run.define_metric(axis)
            self.run.define_metric(pattern, step_metric=axis)

    def scalars(self, values: dict[str, float], step: int) -> None:
        axis = "epoch" if all(k.startswith("epoch/") for k in values) else "global_step"
        self.run.log({**values, axis: step})

    def close(self) -> None:
        self.run.finish()


class MlflowSink:
    def __init__(self, run: Path, config: dict):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise UserError("--log mlflow needs the optional extra: pip install 'rnas[mlflow]'") from None
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if uri is None:  # a file store in the run directory (MLflow 3 keeps it behind this switch)
            uri = (run / "mlruns").resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "rnas")
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        fresh = not (run / "mlflow-id").is_file()
        self.run_id = _run_id(run, "mlflow-id",
                              lambda: self.client.create_run(experiment_id, run_name=run.name).info.run_id)
        if fresh:
            from mlflow.entities import Param

            self.client.log_batch(self.run_id, params=[Param(k, str(v)[:500]) for k, v in config.items()])

    def scalars(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in values.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


SINKS = {"wandb": WandbSink, "mlflow": MlflowSink}


def make_sinks(names: str, run: Path, config: dict) -> list:
    """The extra loggers of ``--log`` (TensorBoard is the Metrics class's own)."""
    return [SINKS[name](run, config) for name in parse_loggers(names).split(",") if name in SINKS]
