"""The sweep report from fabricated job directories whose right answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from ei_lightning.report import main as report_main
from ei_lightning.report import write_report
from ei_lightning.statistics import learning_speed

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_job(
    sweep: Path,
    name: str,
    model: str,
    seed: int,
    test_acc: float | None,
    status: str = "ok",
    curve: tuple[float, ...] = (0.5, 0.7, 0.8),
    extra: tuple[str, ...] = (),
) -> None:
    """A job directory as a real job leaves it; ``test_acc=None`` leaves no result file."""
    job = sweep / name
    (job / ".hydra").mkdir(parents=True)
    config = {"model": {"name": model}, "data": {"name": "fmnist"}, "seed": seed}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    overrides = [f"model={model}", "data=fmnist", f"seed={seed}", *extra]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))

    (job / "logs").mkdir()
    rows = [{"epoch": e, "step": 10 * (e + 1), "val/acc": a, "val/loss": 1 - a} for e, a in
            enumerate(curve)]  # fmt: skip
    rows += [{"epoch": e, "step": 10 * (e + 1), "train/loss_epoch": 2.0 - e} for e in range(3)]
    pd.DataFrame(rows).to_csv(job / "logs" / "metrics.csv", index=False)
    if test_acc is None:
        return

    error = None if status == "ok" else "DivergedError: loss is nan"
    result = {
        "model": model, "data": "fmnist", "seed": seed, "status": status, "error": error,
        "test_acc": test_acc, "best_val_acc": max(curve), "overrides": overrides,
    }  # fmt: skip
    (job / "result.json").write_text(json.dumps(result))


MLP = [0.80, 0.82, 0.84]
SPLIT = [0.70, 0.75, 0.71]


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """mlp and split_ep over seeds 0-2, a failed split_ep seed 3 and a lhb_dan with no result."""
    for seed, (mlp, split) in enumerate(zip(MLP, SPLIT, strict=True)):
        make_job(tmp_path, f"mlp_{seed}", "mlp", seed, mlp)
        make_job(tmp_path, f"split_{seed}", "split_ep", seed, split, curve=(0.6, 0.78, 0.8))
    make_job(tmp_path, "split_3", "split_ep", 3, float("nan"), status="failed")
    make_job(tmp_path, "lhb_0", "lhb_dan", 0, None)
    make_job(tmp_path, "combined_0", "combined_ei", 0, None, status="invalid")
    (tmp_path / "combined_0" / "logs" / "metrics.csv").unlink()  # stopped before training
    return tmp_path


def test_summary_matches_independent_statistics(sweep: Path) -> None:
    summary = write_report(sweep).set_index("model")

    n = len(MLP)
    sem = np.std(MLP, ddof=1) / np.sqrt(n)
    half = stats.t.ppf(0.975, n - 1) * sem
    assert summary.loc["mlp", "n"] == n
    assert summary.loc["mlp", "test_acc_mean"] == pytest.approx(0.82)
    assert summary.loc["mlp", "test_acc_std"] == pytest.approx(0.02)
    assert summary.loc["mlp", "test_acc_sem"] == pytest.approx(sem)
    assert summary.loc["mlp", "test_acc_ci95_low"] == pytest.approx(0.82 - half)
    assert summary.loc["split_ep", "test_acc_mean"] == pytest.approx(np.mean(SPLIT))
    assert summary.loc["split_ep", "n_not_ok"] == 1
    assert summary.loc["split_ep", "best_val_acc_mean"] == pytest.approx(0.8)


def test_paired_comparison_against_mlp(sweep: Path) -> None:
    summary = write_report(sweep).set_index("model")

    diff = np.subtract(SPLIT, MLP)  # seeds 0-2; the failed seed 3 has no partner
    t = diff.mean() / (diff.std(ddof=1) / np.sqrt(len(diff)))
    p_t = 2 * stats.t.sf(abs(t), len(diff) - 1)
    # all three differences negative: exact two-sided signed-rank p = 2 / 2**3
    assert summary.loc["split_ep", "diff_vs_mlp"] == pytest.approx(-0.1)
    assert summary.loc["split_ep", "n_pairs"] == 3
    assert summary.loc["split_ep", "p_ttest"] == pytest.approx(p_t)
    assert summary.loc["split_ep", "p_wilcoxon"] == pytest.approx(0.25)
    assert np.isnan(summary.loc["mlp", "p_ttest"])
    assert summary.loc["mlp", "paired_reason"] == "the control itself"


def test_learning_speed_from_the_curves(sweep: Path) -> None:
    summary = write_report(sweep).set_index("model")

    # (0.5, 0.7, 0.8): trapezoids (0.6 + 0.75) over 2 epochs; 95% of 0.8 first reached at epoch 3
    assert summary.loc["mlp", "val_auc_mean"] == pytest.approx(0.675)
    assert summary.loc["mlp", "epochs_to_95_mean"] == 3
    assert summary.loc["split_ep", "epochs_to_95_mean"] == 2


def test_failed_and_missing_jobs_are_listed_not_dropped(sweep: Path) -> None:
    write_report(sweep)

    runs = pd.read_csv(sweep / "runs.csv").set_index("job")
    assert len(runs) == 9
    assert runs.loc["lhb_0", "status"] == "missing"
    assert runs.loc["split_3", "status"] == "failed"
    assert "nan" in runs.loc["split_3", "error"]
    assert "lhb_dan" not in set(pd.read_csv(sweep / "summary.csv")["model"])


def test_curves_are_long_format_per_run_and_epoch(sweep: Path) -> None:
    write_report(sweep)

    curves = pd.read_csv(sweep / "curves.csv")
    mlp0 = curves[(curves["model"] == "mlp") & (curves["seed"] == 0)]
    assert list(curves.columns[:8]) == [
        "model", "data", "seed", "epoch", "step", "val_acc", "val_loss", "train_loss",
    ]  # fmt: skip
    assert mlp0["epoch"].tolist() == [1, 2, 3]
    assert mlp0["val_acc"].tolist() == [0.5, 0.7, 0.8]
    assert mlp0["train_loss"].tolist() == [2.0, 1.0, 0.0]


def test_figures_are_written_as_png(sweep: Path) -> None:
    write_report(sweep)

    for name in ("test_accuracy.png", "learning_curves.png"):
        data = (sweep / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000


def test_swept_values_other_than_seed_are_summarised_apart(tmp_path: Path) -> None:
    for seed in range(2):
        make_job(tmp_path, f"a{seed}", "mlp", seed, 0.8 + seed / 100, extra=("model.h1=512",))
        make_job(tmp_path, f"b{seed}", "mlp", seed, 0.6 + seed / 100, extra=("model.h1=30",))

    summary = write_report(tmp_path).set_index("override.model.h1")

    assert summary.loc[512, "test_acc_mean"] == pytest.approx(0.805)
    assert summary.loc[30, "test_acc_mean"] == pytest.approx(0.605)


def test_report_command_exits_non_zero_when_jobs_failed(sweep: Path) -> None:
    assert report_main([str(sweep)]) == 1
    assert (sweep / "summary.csv").is_file()


def test_latest_points_at_the_newest_sweep(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun" / "2026-01-01" / "10-00-00"
    make_job(sweep, "mlp_0", "mlp", 0, 0.8)

    write_report(sweep)

    latest = tmp_path / "multirun" / "latest"
    assert latest.is_symlink() and latest.resolve() == sweep.resolve()
    assert (latest / "summary.csv").is_file()


@pytest.mark.parametrize(
    ("accuracy", "auc", "first"),
    [((0.9,), 0.9, 1), ((0.2, 0.4, 0.4, 0.4), (0.3 + 0.4 + 0.4) / 3, 2), ((), np.nan, np.nan)],
)
def test_learning_speed_edge_cases(accuracy: tuple, auc: float, first: float) -> None:
    speed = learning_speed(np.arange(1, len(accuracy) + 1), np.array(accuracy))

    assert speed["val_auc"] == pytest.approx(auc, nan_ok=True)
    assert speed["epochs_to_95"] == pytest.approx(first, nan_ok=True)


def make_switch_job(sweep: Path, model: str, seed: int, before: float, after: float) -> None:
    """A task-switch job: original-task accuracy before and after phase 2, and its curve."""
    name = f"{model}_{seed}"
    make_job(sweep, name, model, seed, 0.85)
    result = json.loads((sweep / name / "result.json").read_text())
    result |= {"task1_acc_phase1": before, "task1_acc_phase2": after,
               "forgetting": before - after, "steps_to_90": 100.0, "steps_to_95": 150.0,
               "phase2_auc": 0.7}  # fmt: skip
    (sweep / name / "result.json").write_text(json.dumps(result))
    curve = pd.DataFrame({"step_after_switch": [0, 50, 100], "task1_val_acc": [before, 0.5, after],
                          "task2_val_acc": [0.1, 0.6, 0.85]})  # fmt: skip
    curve.to_csv(sweep / name / "relearning.csv", index=False)


def test_task_switch_report_summarises_forgetting_against_mlp(tmp_path: Path) -> None:
    drops = {"mlp": [0.5, 0.6, 0.55], "split_ep": [0.3, 0.35, 0.4]}
    for model, values in drops.items():
        for seed, drop in enumerate(values):
            make_switch_job(tmp_path, model, seed, 0.9, 0.9 - drop)

    summary = write_report(tmp_path).set_index("model")

    diff = np.subtract(drops["split_ep"], drops["mlp"])
    assert summary.loc["split_ep", "forgetting_mean"] == pytest.approx(0.35)
    assert summary.loc["split_ep", "forgetting_diff_vs_mlp"] == pytest.approx(diff.mean())
    assert summary.loc["split_ep", "forgetting_p_ttest"] == pytest.approx(
        stats.ttest_rel(drops["split_ep"], drops["mlp"]).pvalue
    )
    assert len(pd.read_csv(tmp_path / "relearning.csv")) == 6 * 3
    for name in ("task_switch_accuracy.png", "relearning_curves.png", "forgetting.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
