"""Summary statistics of a sweep: spread over seeds, paired tests against the control, speed."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def describe(values: np.ndarray) -> dict[str, float]:
    """n, mean, std (ddof 1), SEM and the t-based 95% confidence interval of the mean."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    n = len(values)
    mean = values.mean() if n else np.nan
    std = values.std(ddof=1) if n > 1 else np.nan
    sem = std / np.sqrt(n) if n > 1 else np.nan
    half = stats.t.ppf(0.975, n - 1) * sem if n > 1 else np.nan
    return {"n": n, "mean": mean, "std": std, "sem": sem, "ci95_low": mean - half,
            "ci95_high": mean + half}  # fmt: skip


def summarise(runs: pd.DataFrame, keys: list[str], metrics: list[str]) -> pd.DataFrame:
    """One row per group of ``keys``: ``n`` and each metric's mean, std, SEM and 95% CI."""
    rows = []
    for group, frame in runs.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group, strict=True)) | {"n": len(frame)}
        for metric in metrics:
            described = describe(frame[metric].to_numpy())
            row |= {f"{metric}_{k}": v for k, v in described.items() if k != "n"}
        rows.append(row)
    return pd.DataFrame(rows, columns=_summary_columns(keys, metrics))


def _summary_columns(keys: list[str], metrics: list[str]) -> list[str]:
    fields = ("mean", "std", "sem", "ci95_low", "ci95_high")
    return [*keys, "n", *(f"{m}_{f}" for m in metrics for f in fields)]


def paired_against(runs: pd.DataFrame, keys: list[str], metric: str, control: str) -> pd.DataFrame:
    """Each group against the ``control`` model of the same other keys, paired by seed.

    Returns ``diff_vs_<control>`` (mean of model minus control over matching seeds), the paired
    t-test and Wilcoxon signed-rank p-values, the number of pairs, and a reason where a test
    could not be run.
    """
    others = [k for k in keys if k != "model"]
    rows = []
    for group, frame in runs.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group, strict=True))
        mask = (runs["model"] == control) & _matches(runs, others, row)
        row |= _paired_test(frame, runs[mask], metric)
        if row["model"] == control:
            row["paired_reason"] = "the control itself"
        rows.append(row)
    names = {"diff": f"diff_vs_{control}"}
    columns = [*keys, "diff", "p_ttest", "p_wilcoxon", "n_pairs", "paired_reason"]
    return pd.DataFrame(rows, columns=columns).rename(columns=names)


def _matches(runs: pd.DataFrame, keys: list[str], row: dict) -> pd.Series:
    mask = pd.Series(True, index=runs.index)
    for key in keys:
        mask &= runs[key].isna() if pd.isna(row[key]) else runs[key] == row[key]
    return mask


def _paired_test(model: pd.DataFrame, control: pd.DataFrame, metric: str) -> dict:
    pairs = model[["seed", metric]].merge(
        control[["seed", metric]], on="seed", suffixes=("", "_c")
    )
    pairs = pairs.dropna()
    diff = (pairs[metric] - pairs[f"{metric}_c"]).to_numpy()
    out = {"diff": diff.mean() if len(diff) else np.nan, "p_ttest": np.nan,
           "p_wilcoxon": np.nan, "n_pairs": len(diff), "paired_reason": ""}  # fmt: skip
    if len(diff) < 2:
        out["paired_reason"] = f"{len(diff)} seed(s) shared with the control; need 2"
    elif np.all(diff == 0):
        out["paired_reason"] = "identical to the control on every seed"
    else:
        out["p_ttest"] = stats.ttest_rel(pairs[metric], pairs[f"{metric}_c"]).pvalue
        out["p_wilcoxon"] = stats.wilcoxon(diff).pvalue
    return out


def learning_speed(epochs: np.ndarray, accuracy: np.ndarray) -> dict[str, float]:
    """How fast one run learned, from its validation accuracy per epoch.

    ``val_auc`` is the area under accuracy vs epoch divided by the epochs it spans (the mean
    accuracy over training, in [0, 1]); ``epochs_to_95`` is the first epoch at which validation
    accuracy reaches 95% of the run's final value.
    """
    epochs = np.asarray(epochs, dtype=float)
    accuracy = np.asarray(accuracy, dtype=float)
    if len(accuracy) == 0 or not np.all(np.isfinite(accuracy)):
        return {"val_auc": np.nan, "epochs_to_95": np.nan}

    span = epochs[-1] - epochs[0]
    auc = np.trapezoid(accuracy, epochs) / span if span > 0 else accuracy[0]
    reached = np.flatnonzero(accuracy >= 0.95 * accuracy[-1])
    return {"val_auc": float(auc), "epochs_to_95": float(epochs[reached[0]])}
