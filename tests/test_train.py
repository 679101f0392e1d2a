"""Whole runs: reproducibility, the result file, and the main job's sweep end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import DictConfig

from conftest import CIRCUIT_NAMES
from ei_lightning.train import train

TINY = ("model.h1=32", "model.h2=32", "trainer.max_epochs=1", "trainer.limit_train_batches=10",
        "progress=epoch")  # fmt: skip


def test_same_seed_reproduces_and_other_seed_differs(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    first = train(make_cfg(*TINY, "seed=1"), tmp_path / "a")
    again = train(make_cfg(*TINY, "seed=1"), tmp_path / "b")
    other = train(make_cfg(*TINY, "seed=2"), tmp_path / "c")

    assert first["test_acc"] == again["test_acc"]
    assert first["test_loss"] == again["test_loss"]
    assert first["test_loss"] != other["test_loss"]


def test_run_reports_census_parameters_and_no_violation(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    result = train(make_cfg(*TINY, "model=split_ep_lhb"), tmp_path)

    census = result["sign_census"]
    assert result["sign_violations"] == 0
    assert result["steps"] == 10 and result["epochs"] == 1
    assert census["init"]["ep_i.linear.weight"]["pos"] == 0.0
    assert census["final"]["ep_i.linear.weight"]["pos"] == 0.0
    assert census["init"]["dan.weight"]["neg"] == 0.0
    # 784*16 + 784*16 + 16*32 + 16*32 + 32*10 weights, biases 16+16+32+32+10, 4 BatchNorms
    assert result["n_params"] == 2 * 784 * 16 + 2 * 16 * 32 + 320 + 106 + 2 * (16 + 16 + 32 + 32)


def test_main_job_sweep_end_to_end(tmp_path: Path) -> None:
    """The real command on real Fashion-MNIST, 5 circuits x 2 tasks x 2 seeds, tiny budget."""
    launch = tmp_path / "launch"
    launch.mkdir()
    sweep = launch / "multirun" / "sweep"
    command = [
        sys.executable, "-m", "ei_lightning.train", "-m",
        "model=glob(*)", "data=glob(*)", "seed=range(2)",
        "trainer.max_epochs=1", "trainer.limit_train_batches=40", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip

    done = subprocess.run(command, cwd=launch, capture_output=True, text=True, env=os.environ)

    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_csv(sweep / "runs.csv")
    expected = {(m, d, s) for m in CIRCUIT_NAMES for d in ("fmnist", "shuffled") for s in (0, 1)}
    assert len(runs) == 20
    assert set(zip(runs["model"], runs["data"], runs["seed"], strict=True)) == expected
    assert (runs["status"] == "ok").all()
    assert (runs["test_acc"] > 0.1).all()
    assert (runs["sign_violations"] == 0).all()

    summary = pd.read_csv(sweep / "summary.csv")
    assert len(summary) == 10 and (summary["n"] == 2).all()
    assert {p.name for p in launch.iterdir()} == {"multirun"}
    for job in runs["job"]:
        job_dir = sweep / job
        assert (job_dir / "logs" / "metrics.csv").is_file()
        assert json.loads((job_dir / "result.json").read_text())["status"] == "ok"
    assert "test_acc_mean" in done.stderr + done.stdout


def test_logs_hold_step_losses_at_the_cadence_and_each_epochs_own_loss(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg(*TINY, "trainer.max_epochs=2", "trainer.limit_train_batches=40")

    with caplog.at_level("INFO"):
        train(cfg, tmp_path)

    metrics = pd.read_csv(tmp_path / "logs" / "metrics.csv")
    step_rows = metrics.dropna(subset=["train/loss"])
    epoch_loss = metrics.dropna(subset=["train/loss_epoch"])["train/loss_epoch"].tolist()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert step_rows["step"].tolist() == [19, 39, 59, 79]  # every 20 optimizer steps
    assert len(epoch_loss) == 2 and len(lines) == 2
    assert f"train/loss_epoch={epoch_loss[0]:.4f}" in lines[0]
    assert f"train/loss_epoch={epoch_loss[1]:.4f}" in lines[1]
