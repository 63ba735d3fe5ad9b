"""Every figure renders from small synthetic results (no training) into a valid, non-blank PNG."""

import io

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from learned_halting import plotting
from learned_halting.plotting import ModelResults
from learned_halting.problem import global_minimum


def synthetic(name, act=False, n=200, steps=100, seed=0):
    rng = np.random.default_rng(seed)
    decay = np.exp(-np.arange(steps + 1) / rng.uniform(5, 30))
    nll = global_minimum() + 5 + 20 * decay[None] + rng.normal(0, 2, (n, steps + 1))
    r = ModelResults(
        name=name,
        nll=nll.astype(np.float32),
        train_epochs=np.arange(1, 11),
        train_nll=30 - np.arange(10, dtype=float),
        val_epochs=np.array([5, 10]),
        val_nll=np.array([25.0, 21.0]),
        best_epoch=10,
    )
    if act:
        logits = np.cumsum(rng.normal(0.1, 0.5, (n, steps)), 1)
        q = np.exp(logits - logits.max(1, keepdims=True))
        q /= q.sum(1, keepdims=True)
        r.q = q.astype(np.float32)
        r.mode_step = q.argmax(1) + 1
        r.stop_step = np.minimum((np.cumsum(q, 1) >= 0.9).argmax(1) + 1, steps)
        r.online_stop_step = rng.integers(1, steps, n)
        r.nll_distance = rng.normal(10, 3, n)
    return r


def png_of(fig):
    assert isinstance(fig, Figure)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=plotting.DPI)
    buf.seek(0)
    img = Image.open(buf)
    assert img.format == "PNG"
    return img


def assert_real_png(fig, min_w=600, min_h=400):
    img = png_of(fig)
    assert img.width >= min_w and img.height >= min_h
    assert np.asarray(img.convert("L"), dtype=float).std() > 5


MODELS = ["metaV1", "metaV3.2", "actV2_a", "actV2_b", "actV2_c"]


def test_comparison_figure_with_learning_curves():
    res = [synthetic(m, act=m.startswith("act"), seed=i) for i, m in enumerate(MODELS)]
    fig = plotting.comparison_figure(res, [10, 100], "title", learning_curves=res[2:],
                                     styles=plotting.model_styles(MODELS))
    assert len(fig.axes) == 5
    legend = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    assert any("stop=" in t for t in legend) and any("10·log π" in t for t in legend)
    assert fig.axes[0].get_xlabel() == "optimisation step" and fig.axes[0].get_ylabel() == "mean test NLL"
    assert_real_png(fig)


def test_replicates_draw_their_mean_with_a_95_percent_band():
    r = synthetic("metaV1", seed=1)
    r.replicate_curves = np.stack([r.nll.mean(0) + k for k in (-1.0, 0.0, 1.0)])
    mean, half, name = r.mean_curve(100)
    np.testing.assert_allclose(mean, r.nll.astype(np.float64).mean(0), rtol=1e-6)
    np.testing.assert_allclose(half, 4.303 / np.sqrt(3), rtol=1e-6)
    assert name == "95% interval over 3 replicates" and r.label == "metaV1 (3 replicates)"
    act = synthetic("actV2", act=True)
    act.replicate_curves = r.replicate_curves
    assert act.label == f"actV2 (stop={act.online_stop_step.mean():.0f}, 3 replicates)"
    fig = plotting.comparison_figure([r, synthetic("adam", seed=2)], [10, 100])
    assert "95% interval over 3 replicates" in fig.axes[1].get_title()
    assert_real_png(fig)


def test_comparison_figure_three_zooms():
    res = [synthetic(m, seed=i) for i, m in enumerate(MODELS[:2])]
    fig = plotting.comparison_figure(res, [100, 20, 10], "t")
    assert [ax.get_xlim()[1] for ax in fig.axes] == [100, 20, 10]
    assert_real_png(fig)


def test_a_model_keeps_its_colour_across_figures():
    styles = plotting.model_styles(["a", "b", "c"] + [f"m{i}" for i in range(12)])
    assert styles["a"] != styles["b"]
    assert len({(tuple(s["color"]), s["linestyle"]) for s in styles.values()}) == 15
    assert plotting.model_styles(["a", "b", "c"])["b"] == styles["b"]
    with_baselines = plotting.model_styles(["a", "b"], ["adam", "sgd"])
    assert with_baselines["adam"]["linestyle"] == "-." and with_baselines["adam"] != with_baselines["sgd"]
    assert with_baselines["a"] == styles["a"]


def test_learning_curves_figure():
    fig = plotting.learning_curves_figure([synthetic(m, seed=i) for i, m in enumerate(MODELS)])
    assert_real_png(fig)


def test_qt_distributions_figure():
    rows = {"T=100": [synthetic("a", True, seed=1), synthetic("b", True, seed=2)],
            "E[T]=18": [synthetic("c", True, seed=3), None]}
    fig = plotting.qt_distributions_figure(rows, ["nu=0.1", "nu=0.9"])
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 3 and all("mode step" in t and "median" in t for t in titles)
    assert_real_png(fig)


def test_halting_figure():
    fig = plotting.halting_figure(synthetic("actV2_nu0.9_T100", True))
    assert len(fig.axes) == 4
    assert_real_png(fig)


def test_trajectory_gradient_figure():
    pairs = [(synthetic("metaV1", seed=1), synthetic("metaV1_full", seed=2)),
             (synthetic("actV2", True, seed=3), synthetic("actV2_full", True, seed=4))]
    fig = plotting.trajectory_gradient_figure(pairs)
    assert len(fig.axes) == 4
    act_legend = [t.get_text() for t in fig.axes[3].get_legend().get_texts()]
    assert len(act_legend) == 2 and all("mean stopping step" in t for t in act_legend)
    assert fig.axes[2].get_xlim() == (0, 10)
    assert_real_png(fig)


def test_save_figure_writes_a_png(tmp_path):
    path = tmp_path / "f.png"
    plotting.save_figure(plotting.halting_figure(synthetic("x", True)), path)
    assert Image.open(path).format == "PNG"
    assert [p.name for p in tmp_path.iterdir()] == ["f.png"]


@pytest.mark.parametrize("steps", [50, 100])
def test_q_stats_caption(steps):
    r = synthetic("x", True, steps=steps)
    text = plotting.q_stats(r)
    assert f"mean {r.mode_step.mean():.1f}" in text and "sd" in text
