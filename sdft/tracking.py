"""Experiment trackers: ``report_to`` for the trainer, and a run summary for the same trackers.

``TrainConfig.report_to`` (``none``, or a comma list of ``tensorboard``, ``wandb``, ``mlflow``)
goes to ``transformers.Trainer``, which logs the loss curve itself. :func:`log_summary` logs
what the Trainer never sees (rewrite acceptance, eval scores) to the same trackers. Each tracker
is an optional extra of sdft-toolkit, imported only here and only when asked for; a missing one
fails before any model loads, naming the extra to install.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sdft._deps import is_available
from sdft.errors import ConfigError, MissingDependency

# tracker -> (modules that provide it, any one suffices; the sdft-toolkit extra that installs it)
TRACKERS: dict[str, tuple[tuple[str, ...], str]] = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
}


def parse_report_to(value: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The trackers named by a ``report_to`` value (``"none"`` or empty: none), deduplicated.

    Raises:
        ConfigError: a name that is not a supported tracker.
    """
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    names: list[str] = []
    for item in items:
        name = str(item).strip().lower()
        if name in ("", "none"):
            continue
        if name not in TRACKERS:
            raise ConfigError(f"report_to: unknown tracker '{name}' (use none, or a comma list of "
                              f"{', '.join(TRACKERS)})")
        if name not in names:
            names.append(name)
    return names


def check_trackers(report_to: str | list[str] | None, purpose: str = "report_to") -> list[str]:
    """The trackers named by ``report_to``, after checking that each one's package is installed.

    Raises:
        ConfigError: an unknown tracker name.
        MissingDependency: a tracker's package is missing (the message names the extra).
    """
    names = parse_report_to(report_to)
    for name in names:
        modules, extra = TRACKERS[name]
        if not any(is_available(m) for m in modules):
            raise MissingDependency(modules[0], extra, f"{purpose}={name}")
    return names


def flatten(summary: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested dict as ``{"a/b/c": value}`` (booleans and None are skipped)."""
    out: dict[str, float] = {}
    for key, value in summary.items():
        path = f"{prefix}/{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[path] = float(value)
    return out


def log_summary(report_to: str | list[str] | None, name: str, summary: Mapping[str, Any], *,
                log_dir: str | Path | None = None, step: int = 0) -> list[str]:
    """Log a run summary (e.g. rewrite acceptance, eval scores) to the trackers in ``report_to``.

    Numeric leaves become scalars named by their path (``eval/safety/score``); the whole dict is
    also stored as JSON (a TensorBoard text entry, a W&B summary, an MLflow artifact).

    Args:
        report_to: as ``TrainConfig.report_to``; ``none`` logs nothing.
        name: the run's name (the TensorBoard sub-folder, the W&B / MLflow run name).
        summary: a JSON-serialisable dict.
        log_dir: TensorBoard's folder (the run's output folder); ``$TENSORBOARD_LOGGING_DIR``
            wins when set, as it does for the Trainer. Default: ``./runs``.
        step: the step the scalars are logged at.

    Returns:
        The trackers logged to.

    Raises:
        MissingDependency: a named tracker is not installed (names the extra to install).
    """
    names = check_trackers(report_to, "log_summary report_to")
    scalars = flatten(summary)
    text = json.dumps(summary, indent=2, default=str, ensure_ascii=False)
    for tracker in names:
        if tracker == "tensorboard":
            root = os.environ.get("TENSORBOARD_LOGGING_DIR") or log_dir or "runs"
            _tensorboard(Path(root).expanduser() / name, scalars, text, step)
        elif tracker == "wandb":
            _wandb(name, summary, scalars, step)
        else:
            _mlflow(name, summary, scalars, step)
    return names


def _tensorboard(folder: Path, scalars: dict[str, float], text: str, step: int) -> None:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboardX alone
        from tensorboardX import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for key, value in scalars.items():
            writer.add_scalar(key, value, step)
        writer.add_text("summary", f"```\n{text}\n```", step)
    finally:
        writer.close()


def _wandb(name: str, summary: Mapping[str, Any], scalars: dict[str, float], step: int) -> None:
    import wandb

    started = wandb.run is None  # inside a run the Trainer opened: add to it, leave it open
    run = wandb.init(project=os.environ.get("WANDB_PROJECT", "sdft"), name=name) if started else wandb.run
    try:
        run.log(scalars, step=step)
        run.summary.update(json.loads(json.dumps(dict(summary), default=str)))
    finally:
        if started:
            run.finish()


def _mlflow(name: str, summary: Mapping[str, Any], scalars: dict[str, float], step: int) -> None:
    import mlflow

    # MLflow metric names may not hold every character our keys can; "/" and "_" are fine
    clean = {"".join(c if c.isalnum() or c in "/_-. " else "_" for c in k): v for k, v in scalars.items()}
    with mlflow.start_run(run_name=name, nested=mlflow.active_run() is not None):
        mlflow.log_metrics(clean, step=step)
        mlflow.log_dict(json.loads(json.dumps(dict(summary), default=str)), f"{name}.json")
