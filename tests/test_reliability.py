"""Bad input ends in a clear message; faults end in a recorded status; nothing half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig

from ei_lightning import results
from ei_lightning import train as train_module
from ei_lightning.errors import ConfigError
from ei_lightning.lightning_module import CircuitModule
from ei_lightning.results import read_result, write_json_atomic
from ei_lightning.train import run_job, train

TINY = ("model.h1=16", "model.h2=16", "trainer.max_epochs=1", "trainer.limit_train_batches=3",
        "progress=epoch")  # fmt: skip


def run_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "ei_lightning.train", *overrides]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=os.environ)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model=mpl", "Could not find 'model/mpl'"),
        ("model.h1x=3", "Key 'h1x' is not in struct"),
        ("data=mnist", "Could not find 'data/mnist'"),
    ],
)
def test_unknown_names_are_rejected_by_the_config(
    tmp_path: Path, override: str, message: str
) -> None:
    done = run_cli(tmp_path, override)

    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.h1=0", "model.h1=0 must be a positive integer width"),
        ("model.h2=-4", "model.h2=-4 must be a positive integer width"),
        ("model.e_fraction=1.0", "model.e_fraction=1.0 must lie strictly between 0 and 1"),
        ("model.scope=some", "model.scope='some' is not a constraint scope; use one of"),
        ("data.batch_size=0", "data.batch_size=0 must be an integer of at least 2"),
        ("trainer.max_epochs=0", "trainer.max_epochs=0 must be an integer of at least 1"),
        ("optim.lr=-0.1", "optim.lr=-0.1 must be a positive learning rate"),
        ("data.root=/nonexistent", "data.root=/nonexistent is not a directory"),
    ],
)
def test_bad_settings_stop_before_training_with_one_message(
    tmp_path: Path, override: str, message: str
) -> None:
    done = run_cli(tmp_path, *TINY, override)

    assert done.returncode == 2
    assert message in done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert "Epoch" not in done.stderr and "epoch 1/1" not in done.stdout + done.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["seed=-1"], "seed=-1 must be a non-negative integer"),
        (["threads=abc"], "threads='abc' must be a positive integer"),
        (["data.batch_size=1"], "data.batch_size=1 must be an integer of at least 2"),
        (["data.split_seed=abc"], "data.split_seed='abc' must be a non-negative integer"),
        (["trainer.accumulate_grad_batches=0"], "trainer.accumulate_grad_batches=0 must be"),
        (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0 would train nothing"),
        (["trainer.devices=2"], "trainer.devices=2: each run uses one device"),
        (["trainer.accelerator=gpu"], "Lightning's Trainer rejected the trainer.* settings"),
        (["data.shuffle=labels"], "data=fmnist is the original task and takes no"),
        (["data=shuffled", "data.shuffle=null"], "data=shuffled needs data.shuffle=pixels or"),
    ],
)
def test_more_bad_settings_raise_config_errors(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, overrides: list[str], message: str
) -> None:
    if "trainer.accelerator=gpu" in overrides and torch.cuda.is_available():
        pytest.skip("a GPU is present, so accelerator=gpu is valid here")

    with pytest.raises(ConfigError, match=message.replace("*", r"\*").replace("(", r"\(")):
        train(make_cfg(*TINY, *overrides), tmp_path)


def test_fraction_that_empties_a_population_names_both_sizes(
    make_cfg: Callable[..., DictConfig], tmp_path: Path
) -> None:
    cfg = make_cfg(*TINY, "model=split_ep_lhb", "model.e_fraction=0.01")

    with pytest.raises(ConfigError, match=r"empty EP population \(0 excitatory, 16 inhibitory\)"):
        train(cfg, tmp_path)


def test_diverged_loss_stops_the_run_at_once_and_says_so(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Poisoned(CircuitModule):
        """A module whose readout holds a NaN weight: every loss is NaN from the first step."""

        def __init__(self, **kwargs: object) -> None:
            super().__init__(**kwargs)
            with torch.no_grad():
                self.circuit.dan.weight[0, 0] = float("nan")

    monkeypatch.setattr(train_module, "CircuitModule", Poisoned)
    cfg = make_cfg(*TINY, "trainer.limit_train_batches=100")

    result = run_job(cfg, tmp_path, overrides=["seed=0"])

    assert result["status"] == "diverged"
    assert "training loss is nan at step 0" in result["error"]
    assert read_result(tmp_path)["status"] == "diverged"
    assert (
        not (tmp_path / "logs" / "metrics.csv").is_file()
        or "train/loss_epoch" not in (tmp_path / "logs" / "metrics.csv").read_text()
    )


def test_failed_write_leaves_the_previous_result_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "result.json"
    write_json_atomic(path, {"status": "ok", "test_acc": 0.9})

    def crash(*args: object, **kwargs: object) -> None:
        args[1].write('{"status": "ok", "test_a')  # half a file, then the process dies
        raise OSError("disk full")

    monkeypatch.setattr(results.json, "dump", crash)
    with pytest.raises(OSError, match="disk full"):
        write_json_atomic(path, {"status": "ok", "test_acc": 0.5})

    assert json.loads(path.read_text()) == {"status": "ok", "test_acc": 0.9}
    assert [p.name for p in tmp_path.iterdir()] == ["result.json"]


def test_half_written_result_counts_as_missing(tmp_path: Path) -> None:
    (tmp_path / "result.json").write_text('{"status": "ok", "test_a')

    assert read_result(tmp_path) is None


def test_final_batch_of_one_trains_without_loss_of_data(
    make_cfg: Callable[..., DictConfig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 50,000 training images in batches of 49,999 leave one image over
    cfg = make_cfg(*TINY, "model.h1=4", "model.h2=4", "data.batch_size=49999")

    with caplog.at_level("INFO"):
        result = train(cfg, tmp_path)

    assert result["steps"] == 1
    assert "50000 samples in batches of 49999: the last sample joins the batch before" in (
        caplog.text
    )


def test_killed_run_resumes_to_the_same_final_metrics(tmp_path: Path) -> None:
    """SIGKILL a run after its first checkpoint; the rerun must end where an unbroken run ends."""
    settings = ["model.h1=64", "model.h2=64", "trainer.max_epochs=3", "progress=epoch"]
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run_cli(tmp_path, *settings, f"hydra.run.dir={whole}").returncode == 0

    command = [sys.executable, "-m", "ei_lightning.train", *settings, f"hydra.run.dir={broken}"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=os.environ)  # fmt: skip
    checkpoint = broken / "checkpoints" / "last.ckpt"
    while not checkpoint.exists() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert read_result(broken) is None, "the run ended before it could be killed"
    left = torch.load(checkpoint, map_location="cpu", weights_only=False)
    assert left["epoch"] < 2, "the checkpoint left behind must come from the middle of the run"

    rerun = run_cli(tmp_path, *settings, f"hydra.run.dir={broken}")

    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Resuming from" in rerun.stdout + rerun.stderr
    first, second = read_result(whole), read_result(broken)
    for key in ("test_acc", "test_loss", "best_val_acc", "steps", "epochs"):
        assert first[key] == second[key], key
