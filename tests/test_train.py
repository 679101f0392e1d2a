"""Whole runs: reproducibility, the result file, and the main job's sweep end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd
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
