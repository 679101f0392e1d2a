"""The sweep report: tables and figures gathered from the job directories of one sweep.

Runs at the end of every multirun (as a Hydra callback) and on demand for a sweep that was
interrupted or partly failed:

    python -m ei_lightning.report multirun/2026-12-03/10-00-00
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ei_lightning.results import read_result
from ei_lightning.statistics import learning_speed, paired_against, summarise
from ei_lightning.task_switch import RELEARNING_FILE

log = logging.getLogger(__name__)

RUN_COLUMNS = [
    "job", "model", "data", "seed", "status", "error", "test_acc", "test_loss", "best_val_acc",
    "val_auc", "epochs_to_95", "epochs", "steps", "wall_s", "n_params", "sign_violations",
]  # fmt: skip
SWITCH_METRICS = [
    "task1_acc_phase1", "task1_acc_phase2", "forgetting", "steps_to_90", "steps_to_95",
    "phase2_auc",
]  # fmt: skip
NUMERIC_COLUMNS = RUN_COLUMNS[6:]
CURVE_COLUMNS = [
    "model", "data", "seed", "epoch", "step", "val_acc", "val_loss", "train_loss", "job",
]  # fmt: skip
IDENTITY_KEYS = {"model", "data", "seed", "resume"}


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Every job directory of a sweep, in job order: those holding the config Hydra saved."""
    found = [p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")]
    return sorted(found, key=_job_number)


def _job_number(job_dir: Path) -> tuple[int, str]:
    # job directories end in Hydra's job number (conf/train.yaml: hydra.sweep.subdir)
    tail = job_dir.name.rsplit("_", 1)[-1]
    return (int(tail) if tail.isdigit() else -1, job_dir.name)


def job_overrides(job_dir: Path) -> dict[str, str]:
    """The job's command-line overrides as ``{key: value}``."""
    path = job_dir / ".hydra" / "overrides.yaml"
    items = OmegaConf.to_container(OmegaConf.load(path)) if path.is_file() else []
    return dict(item.lstrip("+~").split("=", 1) for item in items if "=" in item)


def _identity_from_config(job_dir: Path) -> dict[str, Any]:
    cfg = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
    return {"model": cfg.model.name, "data": cfg.data.name, "seed": cfg.seed}


def read_metrics(job_dir: Path) -> pd.DataFrame:
    """The job's CSV log, joined across attempts when the job was resumed."""
    logs = job_dir / "logs"
    parts = sorted(logs.glob("metrics-attempt*.csv"), key=lambda p: int(p.stem[15:]))
    parts += [logs / "metrics.csv"] if (logs / "metrics.csv").is_file() else []
    frames = [pd.read_csv(p) for p in parts if p.stat().st_size > 0]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def read_curve(job_dir: Path) -> pd.DataFrame:
    """Per-epoch validation accuracy and loss, with the epoch's mean training loss."""
    metrics = read_metrics(job_dir)
    if metrics.empty or "epoch" not in metrics:
        return pd.DataFrame(columns=["epoch", "step", "val_acc", "val_loss", "train_loss"])
    val = metrics.dropna(subset=["val/acc"]) if "val/acc" in metrics else metrics.iloc[:0]
    curve = pd.DataFrame(
        {
            "epoch": val["epoch"].astype(int) + 1,
            "step": val["step"].astype(int),
            "val_acc": val["val/acc"],
            "val_loss": val.get("val/loss"),
        }
    )
    if "train/loss_epoch" in metrics:
        train = metrics.dropna(subset=["train/loss_epoch"]).groupby("epoch")["train/loss_epoch"]
        curve["train_loss"] = curve["epoch"].map(train.last().rename(lambda e: int(e) + 1))
    else:
        curve["train_loss"] = np.nan
    return curve.drop_duplicates("epoch", keep="last").reset_index(drop=True)


def collect(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """One row per job (missing jobs included), validation curves and relearning curves."""
    rows, curves, relearning = [], [], []
    for job_dir in job_dirs(sweep_dir):
        result = read_result(job_dir)
        if result is None:
            row = _identity_from_config(job_dir) | {"status": "missing", "error": "no result"}
        else:
            row = {k: v for k, v in result.items() if k not in ("sign_census", "overrides")}
        row["job"] = job_dir.name
        row |= {f"override.{k}": v for k, v in job_overrides(job_dir).items()}

        curve = read_curve(job_dir)
        row |= learning_speed(curve["epoch"].to_numpy(), curve["val_acc"].to_numpy())
        rows.append(row)
        identity = {"job": job_dir.name, "model": row["model"], "data": row["data"],
                    "seed": row["seed"]}  # fmt: skip
        curves.append(curve.assign(**identity))
        if (job_dir / RELEARNING_FILE).is_file():
            relearning.append(pd.read_csv(job_dir / RELEARNING_FILE).assign(**identity))

    runs = pd.DataFrame(rows)
    for column in NUMERIC_COLUMNS:
        runs[column] = pd.to_numeric(runs.get(column), errors="coerce")
    extra = sorted(c for c in runs.columns if c not in RUN_COLUMNS)
    for column in extra:
        numeric = pd.to_numeric(runs[column], errors="coerce")
        if numeric.notna().sum() == runs[column].notna().sum():
            runs[column] = numeric  # so 512 and 30 sort and group as numbers
    runs = runs.reindex(columns=RUN_COLUMNS + extra)
    curves_table = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame()
    curves_table = curves_table.reindex(columns=CURVE_COLUMNS)
    numeric = [c for c in CURVE_COLUMNS if c not in ("model", "data", "job")]
    curves_table[numeric] = curves_table[numeric].apply(pd.to_numeric, errors="coerce")
    relearning_table = pd.concat(relearning, ignore_index=True) if relearning else pd.DataFrame()
    return runs, curves_table, relearning_table


def group_keys(runs: pd.DataFrame) -> list[str]:
    """model, data and every other override that varies in the sweep, except the seed."""
    varying = [
        c for c in runs.columns
        if c.startswith("override.") and c.split(".", 1)[1] not in IDENTITY_KEYS
        and runs[c].nunique(dropna=False) > 1
    ]  # fmt: skip
    return ["model", "data", *varying]


def write_report(sweep_dir: Path) -> pd.DataFrame:
    """Write runs.csv, summary.csv, curves.csv and the figures; return the summary."""
    from ei_lightning.figures import plot_accuracy, plot_curves

    sweep_dir = Path(sweep_dir)
    runs, curves, relearning = collect(sweep_dir)
    if runs.empty:
        raise FileNotFoundError(f"{sweep_dir} holds no job directories (no */.hydra/config.yaml)")

    keys = group_keys(runs)
    ok = runs[runs["status"] == "ok"]
    switched = "forgetting" in ok and ok["forgetting"].notna().any()
    metrics = ["test_acc", "best_val_acc", "val_auc", "epochs_to_95"]
    summary = summarise(ok, keys, metrics + (SWITCH_METRICS if switched else []))
    summary = summary.merge(paired_against(ok, keys, "test_acc", "mlp"), on=keys, how="left")
    if switched:
        summary = summary.merge(_paired_forgetting(ok, keys), on=keys, how="left")
        write_switch_report(sweep_dir, ok, relearning, keys)
    _count_missing(summary, runs, keys)

    runs.to_csv(sweep_dir / "runs.csv", index=False)
    summary.to_csv(sweep_dir / "summary.csv", index=False)
    curves.to_csv(sweep_dir / "curves.csv", index=False)
    plot_accuracy(ok, keys, sweep_dir / "test_accuracy.png")
    plot_curves(curves, ok, keys, sweep_dir / "learning_curves.png")
    _point_latest(sweep_dir)

    _log_outcome(sweep_dir, runs, summary, keys)
    return summary


def _paired_forgetting(ok: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    paired = paired_against(ok, keys, "forgetting", "mlp")
    return paired.rename(columns={c: f"forgetting_{c}" for c in paired if c not in keys})


def write_switch_report(
    sweep_dir: Path, ok: pd.DataFrame, relearning: pd.DataFrame, keys: list[str]
) -> None:
    """The task-switch tables and figures: relearning curves, accuracies, forgetting."""
    from ei_lightning.figures import plot_forgetting, plot_relearning, plot_task_switch

    relearning.to_csv(sweep_dir / RELEARNING_FILE, index=False)
    plot_task_switch(ok, keys, sweep_dir / "task_switch_accuracy.png")
    plot_relearning(relearning, ok, keys, sweep_dir / "relearning_curves.png")
    plot_forgetting(ok, keys, sweep_dir / "forgetting.png")


def _count_missing(summary: pd.DataFrame, runs: pd.DataFrame, keys: list[str]) -> None:
    bad = runs[runs["status"] != "ok"].groupby(keys, dropna=False).size().rename("n_not_ok")
    if len(summary):
        merged = summary.merge(bad.reset_index(), on=keys, how="left")
        summary["n_not_ok"] = merged["n_not_ok"].fillna(0).astype(int).to_numpy()


def _point_latest(sweep_dir: Path) -> None:
    """Keep ``<multirun root>/latest`` pointing at this sweep, when it sits in one."""
    root = sweep_dir.resolve().parent.parent
    if root.name != "multirun":
        return
    latest = root / "latest"
    if latest.is_symlink() or not latest.exists():
        tmp = root / ".latest.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(sweep_dir.resolve().relative_to(root))
        tmp.replace(latest)


def _log_outcome(sweep_dir: Path, runs: pd.DataFrame, summary: pd.DataFrame, keys: list) -> None:
    not_ok = runs[runs["status"] != "ok"]
    for _, row in not_ok.iterrows():
        log.warning("job %s (%s): %s", row["job"], row["status"], row["error"])

    cols = [*keys, "n", "test_acc_mean", "test_acc_std", "test_acc_sem", "diff_vs_mlp", "p_ttest"]
    table = summary.reindex(columns=cols).to_string(index=False, float_format="%.4f")
    log.info(
        "Sweep report in %s (%d jobs, %d not ok):\n%s", sweep_dir, len(runs), len(not_ok), table
    )


class SweepReport(Callback):
    """Hydra callback: write the report when a multirun ends, and fail if any job failed.

    Hydra turns exceptions raised here into warnings, so failure leaves by ``SystemExit``.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Refuse to resume a sweep with another command, before any job touches its files."""
        previous = Path(config.hydra.sweep.dir) / "multirun.yaml"
        if OmegaConf.select(config, "resume") is None or not previous.is_file():
            return
        before = _sweep_overrides(OmegaConf.load(previous).hydra.overrides.task)
        now = _sweep_overrides(config.hydra.overrides.task)
        if before != now:
            log.error("%s was started with %s, not %s; resume it with the command that started "
                      "it", previous.parent, before, now)  # fmt: skip
            sys.exit(2)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            write_report(sweep_dir)
        except Exception:
            log.exception("The report of %s could not be written", sweep_dir)
            sys.exit(1)

        status = pd.read_csv(sweep_dir / "runs.csv")["status"]
        if (status != "ok").any():
            log.error("%d of %d jobs did not finish; see runs.csv", (status != "ok").sum(),
                      len(status))  # fmt: skip
            sys.exit(1)


def _sweep_overrides(overrides: Any) -> list[str]:
    return sorted(o for o in overrides if o.lstrip("+~").split("=")[0] != "resume")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the report of a sweep directory.")
    parser.add_argument("sweep_dir", type=Path, help="e.g. multirun/2026-12-03/10-00-00")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.sweep_dir.is_dir():
        log.error("%s is not a directory", args.sweep_dir)
        return 2
    try:
        write_report(args.sweep_dir)
    except FileNotFoundError as err:
        log.error("%s", err)
        return 2
    runs = pd.read_csv(args.sweep_dir / "runs.csv")
    return int((runs["status"] != "ok").any())


if __name__ == "__main__":
    sys.exit(main())
