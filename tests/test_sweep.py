"""Sweeps that go wrong or run elsewhere: failed jobs, resumption, and the submitit launcher."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

TINY = [
    "model.h1=16", "model.h2=16", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
]  # fmt: skip


def sweep(directory: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ei_lightning.train", "-m", *TINY, *overrides]
    if not any(o.startswith("+resume=") for o in overrides):
        command.append(f"hydra.sweep.dir={directory}")
    return subprocess.run(
        command, cwd=directory.parent, capture_output=True, text=True, env=os.environ
    )


def test_failed_job_is_recorded_and_the_sweep_fails_after_the_others(tmp_path: Path) -> None:
    directory = tmp_path / "sweep"

    done = sweep(directory, "model.h1=0,16")

    runs = pd.read_csv(directory / "runs.csv").set_index("override.model.h1")
    assert done.returncode != 0
    assert runs.loc[0, "status"] == "invalid"
    assert "model.h1=0" in runs.loc[0, "error"]
    assert runs.loc[16, "status"] == "ok"
    assert (directory / "summary.csv").is_file()


def test_resume_reruns_exactly_the_jobs_without_a_result(tmp_path: Path) -> None:
    directory = tmp_path / "sweep"
    assert sweep(directory, "seed=0,1,2").returncode == 0
    jobs = sorted(p.parent for p in directory.glob("*/result.json"))
    kept = {p: (p / "result.json").stat().st_mtime_ns for p in jobs[::2]}
    lost = jobs[1]
    (lost / "result.json").unlink()
    for checkpoint in (lost / "checkpoints").iterdir():
        checkpoint.unlink()

    done = sweep(directory, "seed=0,1,2", f"+resume={directory}")

    assert done.returncode == 0, done.stderr[-2000:]
    assert {p: (p / "result.json").stat().st_mtime_ns for p in kept} == kept
    assert json.loads((lost / "result.json").read_text())["status"] == "ok"
    assert (done.stdout + done.stderr).count("not training again") == 2
    assert len(pd.read_csv(directory / "runs.csv")) == 3


def test_submitit_local_launcher_runs_and_reports(tmp_path: Path) -> None:
    directory = tmp_path / "sweep"

    done = sweep(directory, "seed=0,1", "hydra/launcher=submitit_local", "threads=1")

    assert done.returncode == 0, done.stderr[-2000:]
    runs = pd.read_csv(directory / "runs.csv")
    assert sorted(runs["seed"]) == [0, 1] and (runs["status"] == "ok").all()
    assert (directory / "summary.csv").is_file()


def test_joblib_launcher_shares_the_cores_between_parallel_jobs(tmp_path: Path) -> None:
    directory = tmp_path / "sweep"

    done = sweep(directory, "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")

    assert done.returncode == 0, done.stderr[-2000:]
    threads = [json.loads(p.read_text())["threads"] for p in directory.glob("*/result.json")]
    assert threads == [max(1, os.cpu_count() // 2)] * 2


def test_resume_with_another_command_is_refused_before_touching_results(tmp_path: Path) -> None:
    directory = tmp_path / "sweep"
    assert sweep(directory, "seed=0,1").returncode == 0
    before = {p: p.read_text() for p in directory.glob("*/result.json")}

    done = sweep(directory, "seed=0,1", "optim.lr=0.5", f"+resume={directory}")

    assert done.returncode == 2
    assert "resume it with the command that started it" in done.stdout + done.stderr
    assert {p: p.read_text() for p in directory.glob("*/result.json")} == before
