"""Train one circuit on one task: the entry point of every run and every sweep job.

python -m ei_lightning.train model=split_ep data=shuffled seed=3
python -m ei_lightning.train -m 'model=glob(*)' 'data=glob(*)' 'seed=range(5)'
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from ei_lightning.callbacks import EpochSummary, SignConstraint
from ei_lightning.constraints import sign_census
from ei_lightning.datamodule import FashionMNISTDataModule
from ei_lightning.errors import ConfigError
from ei_lightning.lightning_module import CircuitModule, DivergedError
from ei_lightning.protocol import Protocol, build_protocol
from ei_lightning.results import (
    LABEL_PERMUTATION_FILE,
    PIXEL_PERMUTATION_FILE,
    RESULT_FILE,
    read_result,
    write_json_atomic,
)
from ei_lightning.task_switch import RELEARNING_FILE, TaskSwitch

log = logging.getLogger(__name__)

# NOTE: the configs are read from the checkout's conf/, where users edit them, so the package
# runs from a clone (editable install); a wheel alone would not carry them.
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# Trainer arguments that the job sets itself from other config values.
MANAGED_TRAINER_KEYS = ("logger", "callbacks", "default_root_dir", "enable_progress_bar")


def build_trainer(cfg: DictConfig, job_dir: Path, protocol: Protocol) -> L.Trainer:
    """A Trainer whose logs and checkpoints stay inside ``job_dir``."""
    options = check_trainer_args(cfg) | protocol.trainer_options

    bar = show_progress_bar(cfg.progress)
    callbacks: list[L.Callback] = [
        SignConstraint(),
        # one file, replaced at every epoch end: what an interrupted run resumes from
        ModelCheckpoint(
            dirpath=job_dir / "checkpoints",
            filename="last",
            save_top_k=1,
            monitor=None,
            enable_version_counter=False,
        ),  # fmt: skip
        *protocol.callbacks,
    ]
    if not bar:
        callbacks.append(EpochSummary())
    logger = CSVLogger(save_dir=job_dir, name="logs", version="")
    try:
        return L.Trainer(
            **options,
            logger=logger,
            callbacks=callbacks,
            default_root_dir=job_dir,
            enable_progress_bar=bar,
        )
    except (MisconfigurationException, ValueError, TypeError) as err:
        raise ConfigError(f"Lightning's Trainer rejected the trainer.* settings: {err}") from err


def check_trainer_args(cfg: DictConfig) -> dict[str, Any]:
    """The Trainer's keyword arguments, once they are known to be usable."""
    options = OmegaConf.to_container(cfg.trainer, resolve=True)
    for key in MANAGED_TRAINER_KEYS:
        if key in options:
            raise ConfigError(f"trainer.{key} is set by ei_lightning itself; remove the override")
    for key in ("max_epochs", "accumulate_grad_batches"):
        if not _is_count(options.get(key, 1)):
            raise ConfigError(
                f"trainer.{key}={options.get(key)!r} must be an integer of at least 1"
            )
    if options.get("limit_train_batches") in (0, 0.0):
        raise ConfigError("trainer.limit_train_batches=0 would train nothing; use null for all")
    if options.get("devices", 1) not in (1, "1", "auto"):
        # NOTE: one device per run - the data live on it as one tensor and sweeps parallelise
        # across jobs (hydra/launcher=joblib or slurm) instead of across devices.
        raise ConfigError(f"trainer.devices={options['devices']!r}: each run uses one device (1)")
    if not _is_count(cfg.seed, minimum=0):
        raise ConfigError(f"seed={cfg.seed!r} must be a non-negative integer")
    if cfg.threads is not None and not _is_count(cfg.threads):
        raise ConfigError(f"threads={cfg.threads!r} must be a positive integer (or null)")
    show_progress_bar(cfg.progress)
    return options


def _is_count(value: object, minimum: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def show_progress_bar(progress: str) -> bool:
    """Lightning's bar on a terminal; one line per epoch when output goes to a file."""
    choices = ("auto", "bar", "epoch")
    if progress not in choices:
        raise ConfigError(f"progress={progress!r} is not known; use one of {choices}")
    return progress == "bar" or (progress == "auto" and sys.stderr.isatty())


def configure_threads(threads: int | None) -> None:
    """Set torch's CPU threads: as configured, or shared fairly among parallel local jobs.

    Left to torch, every process of a parallel sweep would start one thread per core and the
    processes together would oversubscribe the machine.
    """
    if threads is None:
        threads = parallel_share()
    if threads is not None:  # checked with the other settings in check_trainer_args
        torch.set_num_threads(threads)


def parallel_share() -> int | None:
    """Cores per job when the joblib launcher runs several jobs at once, else ``None``."""
    if not HydraConfig.initialized():
        return None
    launcher = HydraConfig.get().launcher
    if "joblib" not in str(launcher.get("_target_", "")):
        return None

    cores = os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs", -1)
    parallel = cores if n_jobs is None or n_jobs < 0 else min(n_jobs, cores)
    return max(1, cores // max(parallel, 1))


def resume_checkpoint(job_dir: Path) -> Path | None:
    """The job's last checkpoint, when an earlier attempt of this job left one.

    Lightning's CSV logger empties ``metrics.csv`` of an existing log directory, so the earlier
    attempt's log is kept beside it first; the report reads both.
    """
    last = job_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    try:
        torch.load(last, map_location="cpu", weights_only=False)
    except Exception as err:  # a process killed while writing leaves a truncated file
        log.warning("%s is unreadable (%s); training this job from the start", last, err)
        last.rename(last.with_suffix(".ckpt.broken"))
        return None

    metrics = job_dir / "logs" / "metrics.csv"
    if metrics.is_file():
        attempt = len(list(metrics.parent.glob("metrics-attempt*.csv"))) + 1
        metrics.rename(metrics.with_name(f"metrics-attempt{attempt}.csv"))
    log.info("Resuming from %s", last)
    return last


def train(cfg: DictConfig, job_dir: Path, callbacks: Sequence[L.Callback] = ()) -> dict[str, Any]:
    """Fit, then test on the final weights; return the fields of the result file.

    ``callbacks`` join the run's own, for callers that watch training from outside.
    """
    check_trainer_args(cfg)
    configure_threads(cfg.threads)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    protocol = build_protocol(cfg)
    protocol.callbacks += callbacks
    data = protocol.data
    module = CircuitModule(
        model=OmegaConf.to_container(cfg.model, resolve=True),
        optim=OmegaConf.to_container(cfg.optim, resolve=True),
        schedule_epochs=protocol.schedule_epochs,
    )
    data.setup("fit")  # a data problem surfaces here, before any Trainer is built
    trainer = build_trainer(cfg, job_dir, protocol)
    save_shuffle(protocol.shuffled, job_dir)

    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=resume_checkpoint(job_dir))
    tested = trainer.test(module, datamodule=data, verbose=False)[0]
    wall = time.perf_counter() - start

    circuit = module.circuit
    return {
        "test_acc": tested["test/acc"],
        "test_loss": tested["test/loss"],
        "best_val_acc": finite_or_none(module.val_acc_best),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "wall_s": wall,
        "threads": torch.get_num_threads(),
        "n_params": sum(p.numel() for p in circuit.parameters()),
        "sign_violations": circuit.signs.count_violations(circuit),
        "sign_census": {"init": module.init_census, "final": sign_census(circuit)},
        **switch_outcome(protocol.switch, job_dir),
    }


def finite_or_none(metric: Any) -> float | None:
    """The metric's value, or ``None`` when it never saw a value (no validation ran)."""
    if not metric.update_called:
        return None
    value = float(metric.compute())
    return value if math.isfinite(value) else None


def save_shuffle(task: FashionMNISTDataModule, job_dir: Path) -> None:
    """Keep the pixel or label permutation with the run, so the task can be rebuilt exactly."""
    if task.permutation is not None:
        write_json_atomic(job_dir / PIXEL_PERMUTATION_FILE, task.permutation.tolist())
    if task.relabel is not None:
        write_json_atomic(job_dir / LABEL_PERMUTATION_FILE, task.relabel.tolist())


def switch_outcome(switch: TaskSwitch | None, job_dir: Path) -> dict[str, float]:
    """The task-switch measures, with the relearning curve written beside the result."""
    if switch is None:
        return {}
    pd.DataFrame(switch.curve).to_csv(job_dir / RELEARNING_FILE, index=False)
    return switch.summary()


def job_overrides() -> list[str]:
    """The job's command-line overrides, less ``resume``, which does not change the result."""
    if not HydraConfig.initialized():
        return []
    return [
        o for o in HydraConfig.get().overrides.task if o.lstrip("+~").split("=")[0] != "resume"
    ]


def finished_result(job_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """A complete result of this very job from an earlier attempt, if there is one.

    Raises:
        ConfigError: the directory holds a job with other overrides: resuming would mix runs.
    """
    previous = read_result(job_dir)
    if previous is None:
        return None
    if previous.get("overrides") != overrides:
        raise ConfigError(
            f"{job_dir} holds a job with overrides {previous.get('overrides')}, not {overrides}; "
            "resume a sweep with the same command that started it"
        )
    return previous if previous.get("status") == "ok" else None


STATUS_OF_ERROR = ((ConfigError, "invalid"), (DivergedError, "diverged"), (Exception, "failed"))


def run_job(cfg: DictConfig, job_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """Train and record the outcome, successful or not, in the job's result file.

    A failure is recorded rather than raised, so the other jobs of a sweep go on and the sweep
    report still runs (Hydra skips its end-of-sweep callbacks once a job has raised).
    """
    result = {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed,
              "protocol": cfg.protocol.name, "shuffle": cfg.data.shuffle,
              "overrides": overrides}  # fmt: skip
    try:
        previous = finished_result(job_dir, overrides)
    except ConfigError as err:
        log.error("%s", err)  # the directory belongs to another run: leave its files alone
        return result | {"status": "invalid", "error": f"{type(err).__name__}: {err}"}
    if previous is not None:
        log.info("%s already holds a complete result; not training again", job_dir)
        return previous

    try:
        result |= {"status": "ok", "error": None, **train(cfg, job_dir)}
    except Exception as err:
        status = next(name for kind, name in STATUS_OF_ERROR if isinstance(err, kind))
        result |= {"status": status, "error": f"{type(err).__name__}: {err}"}
        write_json_atomic(job_dir / RESULT_FILE, result)
        if status in ("invalid", "diverged"):
            log.error("%s", err)  # the message says what happened; a traceback would bury it
        else:
            log.exception("%s", result["error"])
        return result

    write_json_atomic(job_dir / RESULT_FILE, result)
    log.info(
        "%s on %s, seed %s: test accuracy %.4f (best validation %.4f), %.0f s",
        *(result[k] for k in ("model", "data", "seed", "test_acc", "best_val_acc", "wall_s")),
    )
    return result


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hydra_cfg = HydraConfig.get()
    result = run_job(cfg, Path(hydra_cfg.runtime.output_dir), job_overrides())
    if result["status"] != "ok" and hydra_cfg.mode == RunMode.RUN:
        sys.exit(2 if result["status"] == "invalid" else 1)
    return result.get("test_acc")


if __name__ == "__main__":
    main()
