"""Figures of a sweep, sized to be read on a slide."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

# One colour per circuit in every figure, in the order of docs/models.md.
MODEL_ORDER = ["mlp", "lhb_dan", "combined_ei", "split_ep", "split_ep_lhb"]
MODEL_COLORS = dict(zip(MODEL_ORDER, matplotlib.colormaps["tab10"].colors, strict=False))
FONT_SIZE = 13


def _models(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["model"]))
    return [m for m in MODEL_ORDER if m in present] + [m for m in present if m not in MODEL_ORDER]


def _color(model: str, fallback: int) -> tuple:
    return MODEL_COLORS.get(model, matplotlib.colormaps["tab10"].colors[fallback % 10])


def _panels(frame: pd.DataFrame, keys: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """One panel per combination of the grouping keys other than the model."""
    others = [k for k in keys if k != "model"]
    if frame.empty:
        return []
    return [
        (", ".join(f"{v}" if k == "data" else f"{k.split('.')[-1]}={v}"
                   for k, v in zip(others, group if isinstance(group, tuple) else (group,),
                                   strict=True)), part)
        for group, part in frame.groupby(others, sort=True, dropna=False)
    ]  # fmt: skip


def _figure(n_panels: int, sharey: bool = True) -> tuple[Figure, np.ndarray]:
    # the object API, not pyplot: no GUI backend, and nothing global changes in a notebook
    n = max(n_panels, 1)
    fig = Figure(figsize=(5.5 * n, 4.5))
    axes = fig.subplots(1, n, squeeze=False, sharey=sharey)
    return fig, axes[0]


@matplotlib.rc_context({"font.size": FONT_SIZE})
def plot_accuracy(runs: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Mean test accuracy per circuit with SEM error bars, every seed as a dot."""
    panels = _panels(runs, keys)
    fig, axes = _figure(len(panels), sharey=False)  # each panel zooms on its own accuracies
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, (title, part) in zip(axes, panels, strict=False):
        for i, model in enumerate(_models(part)):
            acc = part.loc[part["model"] == model, "test_acc"].to_numpy(dtype=float)
            sem = acc.std(ddof=1) / np.sqrt(len(acc)) if len(acc) > 1 else 0.0
            ax.bar(i, acc.mean(), yerr=sem, capsize=5, color=_color(model, i), alpha=0.75)
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(acc)), acc, color="black", s=14, zorder=3)
        ax.set_xticks(range(len(_models(part))), _models(part), rotation=30, ha="right")
        ax.set_title(title)
        low = part["test_acc"].min()
        ax.set_ylim(max(0.0, low - 0.05), min(1.0, part["test_acc"].max() + 0.02))
    axes[0].set_ylabel("test accuracy (mean ± SEM)")
    _save(fig, path)


@matplotlib.rc_context({"font.size": FONT_SIZE})
def plot_curves(curves: pd.DataFrame, runs: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Mean validation accuracy per epoch with a shaded SEM band, one line per circuit."""
    extra = [k for k in keys if k not in ("model", "data")]
    ok = curves.merge(runs[["job", *extra]], on="job")  # jobs with a result only
    panels = _panels(ok, keys)
    fig, axes = _figure(len(panels))
    for ax, (title, part) in zip(axes, panels, strict=False):
        for i, model in enumerate(_models(part)):
            by_epoch = part[part["model"] == model].groupby("epoch")["val_acc"]
            mean, sem = by_epoch.mean(), by_epoch.sem().fillna(0.0)
            ax.plot(mean.index, mean, color=_color(model, i), label=model, lw=2, marker="o",
                    markersize=3)  # fmt: skip
            ax.fill_between(mean.index, mean - sem, mean + sem, color=_color(model, i), alpha=0.2)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].set_ylabel("validation accuracy (mean ± SEM)")
    axes[-1].legend(loc="lower right", fontsize=FONT_SIZE - 2)
    _save(fig, path)


def _save(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)


@matplotlib.rc_context({"font.size": FONT_SIZE})
def plot_task_switch(runs: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Per circuit, test accuracy on the original task (end of phase 1) beside the shuffled task
    (end of phase 2), as box plots with every seed as a dot."""
    panels = _panels(runs, keys)
    fig, axes = _figure(len(panels))
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, (title, part) in zip(axes, panels, strict=False):
        models = _models(part)
        for i, model in enumerate(models):
            rows = part[part["model"] == model]
            for offset, column, hatch in ((-0.2, "task1_acc_phase1", ""), (0.2, "test_acc", "//")):
                values = rows[column].to_numpy(dtype=float)
                box = ax.boxplot(
                    values,
                    positions=[i + offset],
                    widths=0.35,
                    patch_artist=True,
                    showfliers=False,
                )  # every seed is drawn as a dot anyway
                box["boxes"][0].set(facecolor=_color(model, i), alpha=0.6, hatch=hatch)
                jitter = rng.uniform(-0.06, 0.06, len(values))
                ax.scatter(i + offset + jitter, values, color="black", s=12, zorder=3)
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_title(title)
        ax.set_xlabel("plain: original task after phase 1; hatched: shuffled after phase 2",
                      fontsize=FONT_SIZE - 3)  # fmt: skip
    axes[0].set_ylabel("test accuracy")
    _save(fig, path)


@matplotlib.rc_context({"font.size": FONT_SIZE})
def plot_relearning(
    relearning: pd.DataFrame, runs: pd.DataFrame, keys: list[str], path: Path
) -> None:
    """Mean validation accuracy after the switch on the new task (solid) and the old (dashed)."""
    extra = [k for k in keys if k not in ("model", "data")]
    ok = relearning.merge(runs[["job", *extra]], on="job")
    panels = _panels(ok, keys)
    fig, axes = _figure(len(panels))
    for ax, (title, part) in zip(axes, panels, strict=False):
        for i, model in enumerate(_models(part)):
            rows = part[part["model"] == model]
            for column, style in (("task2_val_acc", "-"), ("task1_val_acc", "--")):
                by_step = rows.groupby("step_after_switch")[column]
                mean, sem = by_step.mean(), by_step.sem().fillna(0.0)
                label = model if style == "-" else None
                ax.plot(mean.index, mean, style, color=_color(model, i), label=label, lw=2)
                ax.fill_between(mean.index, mean - sem, mean + sem, color=_color(model, i),
                                alpha=0.15)  # fmt: skip
        ax.set_title(f"{title}: new task solid, old dashed", fontsize=FONT_SIZE - 1)
        ax.set_xlabel("optimizer steps after the switch")
    axes[0].set_ylabel("validation accuracy (mean ± SEM)")
    axes[-1].legend(loc="center right", fontsize=FONT_SIZE - 2)
    _save(fig, path)


@matplotlib.rc_context({"font.size": FONT_SIZE})
def plot_forgetting(runs: pd.DataFrame, keys: list[str], path: Path) -> None:
    """Drop in original-task accuracy over phase 2, per circuit, mean ± SEM and every seed."""
    panels = _panels(runs, keys)
    fig, axes = _figure(len(panels))
    rng = np.random.default_rng(0)
    for ax, (title, part) in zip(axes, panels, strict=False):
        models = _models(part)
        for i, model in enumerate(models):
            drop = part.loc[part["model"] == model, "forgetting"].to_numpy(dtype=float)
            sem = drop.std(ddof=1) / np.sqrt(len(drop)) if len(drop) > 1 else 0.0
            ax.bar(i, drop.mean(), yerr=sem, capsize=5, color=_color(model, i), alpha=0.75)
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(drop)), drop, color="black", s=14,
                       zorder=3)  # fmt: skip
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_title(title)
    axes[0].set_ylabel("forgetting: original-task accuracy lost")
    _save(fig, path)
