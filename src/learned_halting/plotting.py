"""The study's figures (SPEC section 7). Every function returns a matplotlib Figure; callers save it.

Inputs are :class:`ModelResults`, loaded from the workflow's result files by
:func:`pipeline.load_model_results` (or built directly in tests). Each model keeps one colour and line
style in every figure (:func:`model_styles`), from seaborn's colour-blind-safe palette.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from .evaluation import mean_ci95  # noqa: E402
from .problem import global_minimum  # noqa: E402

DPI = 150
LINESTYLES = ("-", "--", ":", "-.")


@dataclass
class ModelResults:
    """What the figures need of one model.

    ``nll`` (N, S+1) test NLL per function and step; for act models ``q`` (N, S), ``mode_step``,
    ``stop_step``, ``online_stop_step``, ``nll_distance`` (N,); learning curves: ``train_epochs``,
    ``train_nll`` (per epoch mean training NLL over steps), ``val_epochs``, ``val_nll`` (mean validation
    NLL over steps 1..S), ``best_epoch``.
    """

    name: str
    nll: np.ndarray
    q: np.ndarray | None = None
    mode_step: np.ndarray | None = None
    stop_step: np.ndarray | None = None
    online_stop_step: np.ndarray | None = None
    nll_distance: np.ndarray | None = None
    train_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    train_nll: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_epochs: np.ndarray = field(default_factory=lambda: np.zeros(0))
    val_nll: np.ndarray = field(default_factory=lambda: np.zeros(0))
    best_epoch: int | None = None
    note: str = ""  # shown in the legend, e.g. a baseline's learning rate
    replicate_curves: np.ndarray | None = None  # (replicates, S+1) mean test NLL of each replicate

    @property
    def replicates(self) -> int:
        return 1 if self.replicate_curves is None else len(self.replicate_curves)

    def mean_curve(self, last: int) -> tuple[np.ndarray, np.ndarray, str]:
        """Mean test NLL at steps 0..last and its band: the 95% interval across replicates when there
        are several, else ±1 standard deviation across functions; and the band's name."""
        if self.replicates > 1:
            mean, half = mean_ci95(self.replicate_curves[:, : last + 1])
            return mean, half, f"95% interval over {self.replicates} replicates"
        nll = self.nll[:, : last + 1].astype(np.float64)
        return nll.mean(0), nll.std(0), "±1 sd over functions"

    @property
    def is_act(self) -> bool:
        return self.q is not None

    @property
    def label(self) -> str:
        """Name and, in brackets, the online stopping step (act), a note, the replicate count."""
        parts = []
        if self.online_stop_step is not None:
            parts.append(f"stop={self.online_stop_step.mean():.0f}")
        if self.note:
            parts.append(self.note)
        if self.replicates > 1:
            parts.append(f"{self.replicates} replicates")
        return f"{self.name} ({', '.join(parts)})" if parts else self.name


def model_styles(models: list[str], baselines: list[str] = ()) -> dict[str, dict]:
    """A fixed colour and line style per model, by its position in the config's model list;
    baselines get dark shades and dash-dots, apart from every learned model."""
    palette = sns.color_palette("colorblind", 10)
    styles = {
        m: {"color": palette[i % 10], "linestyle": LINESTYLES[(i // 10) % len(LINESTYLES)]}
        for i, m in enumerate(models)
    }
    dark = ("0.0", "0.35", "0.55", "0.75")  # greys from black
    for i, b in enumerate(baselines):
        styles[b] = {"color": dark[i % len(dark)], "linestyle": "-."}
    return styles


def _style(styles: dict | None, name: str, i: int) -> dict:
    if styles and name in styles:
        return styles[name]
    return model_styles([f"_{k}" for k in range(i + 1)])[f"_{i}"]


def _floor(ax) -> None:
    ax.axhline(global_minimum(), color="0.4", linestyle="--", linewidth=1, zorder=0,
               label="global minimum 10·log π")


def comparison_figure(
    results: list[ModelResults],
    zooms: list[int],
    title: str = "",
    learning_curves: list[ModelResults] | None = None,
    styles: dict | None = None,
    band: bool = True,
) -> Figure:
    """Mean test NLL per optimisation step of several models, one panel per zoom (steps 0..zoom),
    with a ±1 standard-deviation band on the widest panel; optionally a row of learning curves."""
    learning_curves = learning_curves or []
    n_top = len(zooms)
    n_bottom = len(learning_curves)
    cols = max(n_top, n_bottom, 1)
    rows = 1 + (1 if n_bottom else 0)
    fig = plt.figure(figsize=(5.2 * cols, 4.2 * rows + 0.8), dpi=DPI, layout="constrained")
    grid = fig.add_gridspec(rows, cols)
    widest = max(zooms) if zooms else None
    for k, zoom in enumerate(zooms):
        ax = fig.add_subplot(grid[0, k * cols // n_top : (k + 1) * cols // n_top])
        lo_y, hi_y = np.inf, -np.inf
        bands = []
        for i, r in enumerate(results):
            st = _style(styles, r.name, i)
            last = min(zoom, r.nll.shape[1] - 1)
            steps = np.arange(last + 1)
            mean, spread, band_name = r.mean_curve(last)
            ax.plot(steps, mean, label=r.label, marker="o" if zoom <= 20 else None,
                    markersize=3, **st)
            if band and zoom == widest:
                ax.fill_between(steps, mean - spread, mean + spread, color=st["color"], alpha=0.08,
                                linewidth=0)
                bands.append(band_name)
            lo_y, hi_y = min(lo_y, mean.min()), max(hi_y, mean.max())
        _floor(ax)
        floor = global_minimum()
        span = max(hi_y - min(lo_y, floor), 1e-6)
        ax.set_ylim(min(lo_y, floor) - 0.05 * span, hi_y + 0.08 * span)
        ax.set_xlim(0, zoom)
        ax.set_xlabel("optimisation step")
        ax.set_ylabel("mean test NLL")
        bands = list(dict.fromkeys(bands))
        ax.set_title(f"steps 0-{zoom}" + (f"\n(bands: {'; '.join(bands)})" if bands else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        if k == n_top - 1:
            ax.legend(fontsize=8, loc="upper right")
    for k, r in enumerate(learning_curves):
        ax = fig.add_subplot(grid[1, k])
        _learning_curve(ax, r, _style(styles, r.name, k))
    if title:
        fig.suptitle(title)
    return fig


def _learning_curve(ax, r: ModelResults, style: dict) -> None:
    ax.plot(r.train_epochs, r.train_nll, color=style["color"], label="training (mean over steps)")
    ax.plot(r.val_epochs, r.val_nll, color="0.2", marker="o", linestyle="--", markersize=4,
            label="validation (mean over steps)")
    if r.best_epoch is not None and r.best_epoch in set(np.asarray(r.val_epochs).tolist()):
        idx = list(np.asarray(r.val_epochs)).index(r.best_epoch)
        ax.plot([r.best_epoch], [r.val_nll[idx]], marker="*", markersize=12, color="black",
                linestyle="none", label=f"selected (epoch {r.best_epoch})")
    ax.set_title(r.name, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel("mean NLL")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def learning_curves_figure(results: list[ModelResults], styles: dict | None = None,
                           title: str = "") -> Figure:
    """Training and validation loss per epoch, one small panel per model."""
    n = len(results)
    cols = min(n, 4)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.6), dpi=DPI,
                             layout="constrained", squeeze=False)
    for k, r in enumerate(results):
        _learning_curve(axes.flat[k], r, _style(styles, r.name, k))
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.suptitle(title or "Learning curves: mean NLL per epoch (training batches and validation set)")
    return fig


def q_stats(r: ModelResults) -> str:
    """Panel caption of a q(t) bar chart: mode-step range, mean, median and standard deviation."""
    m = r.mode_step
    return (f"mode step {m.min()}-{m.max()}, mean {m.mean():.1f}, median {np.median(m):.0f}, "
            f"sd {m.std():.1f}")


def qt_distributions_figure(
    rows: dict[str, list[ModelResults | None]], columns: list[str], title: str = ""
) -> Figure:
    """Mean q(t|x,S) over the test functions as bars over t, a grid of rows x columns."""
    n_rows, n_cols = len(rows), len(columns)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(4.2 * n_cols, 3.2 * n_rows + 0.6), dpi=DPI,
                             layout="constrained", squeeze=False)
    for i, (row_label, models) in enumerate(rows.items()):
        for j in range(n_cols):
            ax = axes[i, j]
            r = models[j] if j < len(models) else None
            if r is None:
                ax.set_visible(False)
                continue
            q = r.q.astype(np.float64).mean(0)
            t = np.arange(1, len(q) + 1)
            ax.bar(t, q, width=1.0, color=sns.color_palette("colorblind")[0], linewidth=0)
            ax.set_title(f"{row_label}, {columns[j]}\n{q_stats(r)}", fontsize=8)
            ax.set_xlabel("step t")
            ax.set_ylabel("mean q(t|x)")
            ax.set_xlim(0.5, len(q) + 0.5)
            ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title or "Mean halting distribution q(t|x, T) of the act models on the test set")
    return fig


def halting_figure(r: ModelResults, threshold: float = 0.9, title: str = "") -> Figure:
    """Mode step and stopping step against the NLL distance, and their histograms."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 8), dpi=DPI, layout="constrained")
    color = sns.color_palette("colorblind")[0]
    S = r.q.shape[1]
    bins = np.arange(0.5, S + 1.5, max(1, S // 50))
    for row, (steps, what) in enumerate(
        ((r.mode_step, "mode step (argmax q)"),
         (r.stop_step, f"stopping step (cumulative q >= {threshold:g})"))
    ):
        ax = axes[row, 0]
        ax.scatter(steps, r.nll_distance, s=4, alpha=0.3, color=color, linewidths=0)
        ax.set_xlabel(what)
        ax.set_ylabel("NLL(θ_init) − NLL(θ_true)")
        ax.set_title(f"{what} against the NLL distance", fontsize=10)
        ax.grid(alpha=0.3)
        ax = axes[row, 1]
        ax.hist(steps, bins=bins, color=color)
        ax.set_xlabel(what)
        ax.set_ylabel("functions")
        ax.set_title(f"mean {steps.mean():.1f}, median {np.median(steps):.0f}, "
                     f"sd {steps.std():.1f}", fontsize=10)
        ax.grid(alpha=0.3, axis="y")
    fig.suptitle(title or f"{r.name}: halting on {len(r.nll)} test functions")
    return fig


def trajectory_gradient_figure(
    pairs: list[tuple[ModelResults, ModelResults]], styles: dict | None = None, title: str = ""
) -> Figure:
    """Each model against its twin trained with the other gradient path, one column per pair.

    Top: mean test NLL over all steps. Bottom: for act pairs the mean q(t|x) of both models (their
    mean stopping steps in the legend), for meta pairs a zoom on steps 0-10.
    """
    n = len(pairs)
    fig, axes = plt.subplots(2, n, figsize=(6 * n, 8), dpi=DPI, layout="constrained", squeeze=False)
    for j, pair in enumerate(pairs):
        top, bottom = axes[0, j], axes[1, j]
        last = min(r.nll.shape[1] for r in pair) - 1
        for i, r in enumerate(pair):
            st = _style(styles, r.name, i)
            mean = r.nll.astype(np.float64).mean(0)
            top.plot(np.arange(last + 1), mean[: last + 1], label=r.label, **st)
            if not r.is_act:
                bottom.plot(np.arange(11), mean[:11], marker="o", markersize=3, label=r.label, **st)
        for ax, zoom in ((top, last), (bottom, 10)):
            ax.set_xlabel("optimisation step")
            ax.set_ylabel("mean test NLL")
            ax.set_xlim(0, zoom)
            ax.grid(alpha=0.3)
        _floor(top)
        top.set_title(" vs ".join(r.name for r in pair), fontsize=10)
        top.legend(fontsize=8)
        if all(r.is_act for r in pair):
            bottom.cla()
            for i, r in enumerate(pair):
                q = r.q.astype(np.float64).mean(0)
                t = np.arange(1, len(q) + 1)
                st = _style(styles, r.name, i)
                bottom.bar(t, q, width=1.0, alpha=0.45, color=st["color"], linewidth=0,
                           label=f"{r.name} (mean stopping step {r.stop_step.mean():.1f})")
            bottom.set_xlabel("step t")
            bottom.set_ylabel("mean q(t|x)")
            bottom.set_title("halting distribution q(t|x) (mean over test functions)", fontsize=10)
            bottom.grid(alpha=0.3, axis="y")
            bottom.legend(fontsize=7)
        else:
            _floor(bottom)
            bottom.set_title("steps 0-10", fontsize=10)
            bottom.legend(fontsize=8)
    fig.suptitle(title or "Gradient path through the optimizee: detached (the original) against full")
    return fig


def save_figure(fig: Figure, path) -> None:
    """Save a PNG atomically at the study's resolution and close the figure."""
    from .storage import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    plt.close(fig)
