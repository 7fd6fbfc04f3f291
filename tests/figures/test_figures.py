"""astrid.figures: every paper figure draws from small synthetic inputs and saves as PDF and PNG.

The numbers behind the figures are tested in test_evaluation.py.
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from astrid import evaluation, figures  # noqa: E402
from astrid.errors import AstridInputError  # noqa: E402
from astrid.schema import new_triplet_dataset  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def _triplet_dataset(n=10, seed=0):
    rng = np.random.default_rng(seed)
    stamps = rng.normal(size=(n, 63, 63, 3)).astype(np.float32)
    stamps[0, :5, :, :] = np.nan  # an edge cut-out
    labels = np.array([1, 0] * (n // 2) + [0] * (n % 2), dtype=np.int8)
    kinds = np.where(labels == 1, "supernova", "cosmic_ray")
    return new_triplet_dataset(
        stamps,
        {
            "candidate_id": [f"c{i:02d}" for i in range(n)],
            "label": labels,
            "kind": kinds.astype(str),
        },
    )


# --------------------------------------------------------------------------- save and style


def test_save_writes_pdf_and_png(tmp_path):
    fig = figures.plot_scorr_histogram(np.random.default_rng(0).normal(size=(64, 64)))
    paths = figures.save(fig, "hist", tmp_path / "figs")
    assert [p.suffix for p in paths] == [".pdf", ".png"]
    assert paths[0].read_bytes().startswith(b"%PDF")
    assert paths[1].read_bytes().startswith(b"\x89PNG")
    width_px = plt.imread(paths[1]).shape[1]
    assert (
        width_px > 3.5 * 200 * 0.8
    )  # 3.5-inch figure at the style's 200 dpi (tight bbox trims a little)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == [
        "hist.pdf",
        "hist.png",
    ]  # no temporaries
    assert figures.save(fig, "hist", tmp_path / "figs") == paths  # saving again replaces the files
    assert len(list((tmp_path / "figs").iterdir())) == 2


def test_plot_pair_still_works():
    import astrid

    sim = astrid.simulate.pair(size=128, seed=2)
    fig = figures.plot_pair(sim.reference, sim.science, truth=sim.truth)
    assert isinstance(fig, Figure) and len(_images(fig)) == 2


# --------------------------------------------------------------------------- differences


def test_plot_difference_panels(synthetic):
    fig = figures.plot_difference(synthetic, truth=synthetic.truth.copy(), title="pair")
    assert isinstance(fig, Figure)
    assert len(_images(fig)) == 4
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[0].startswith("science") and "S_" in titles[3]
    # masked pixels are NaN in the displayed D, so they get the 'bad' colour
    d_image = fig.axes[2].get_images()[0]
    assert np.isnan(np.asarray(d_image.get_array().filled(np.nan))[synthetic.mask]).all()


def test_plot_scorr_histogram_has_histogram_and_gaussian():
    rng = np.random.default_rng(2)
    fig = figures.plot_scorr_histogram(rng.normal(size=(128, 128)), bins=61)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert len(ax.patches) == 1  # the histogram (stairs)
    (gauss,) = ax.get_lines()
    x, y = gauss.get_data()
    assert y[np.argmin(np.abs(x))] == pytest.approx(1 / math.sqrt(2 * math.pi), rel=1e-3)
    assert "robust std" in ax.texts[0].get_text()


def test_plot_zogy_vs_classic(synthetic):
    classic = evaluation.DifferencePlanes(
        method="classic",
        science=synthetic.science.data,
        reference=synthetic.reference.data,
        D=synthetic.D * 3,
        S_corr=synthetic.S_corr * 3,
        mask=synthetic.mask,
        footprint=synthetic.footprint,
    )
    positions = np.array(
        [[40.0, 40.0], [90.0, 80.0], [2.0, 3.0]]
    )  # the last one runs off the image
    fig = figures.plot_zogy_vs_classic(synthetic, classic, positions, size=21)
    assert len(_images(fig)) == 9
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in axes[:3]][0] == "science"
    labels = [t.get_text() for ax in axes for t in ax.texts]
    assert len(labels) == 6 and all(label.startswith("max |S|") for label in labels)
    # the classic map is 3x the ZOGY one: its labelled peak is 3x too
    peak = [float(label.split()[-1]) for label in labels]
    assert peak[0] == pytest.approx(3 * peak[1], rel=0.05)
    edge = axes[6].get_images()[0].get_array()
    assert (
        np.ma.getmaskarray(edge).any() or np.isnan(np.asarray(edge)).any()
    )  # NaN beyond the image
    with pytest.raises(AstridInputError, match="no star"):
        figures.plot_zogy_vs_classic(synthetic, classic, np.zeros((0, 2)))
    with pytest.raises(AstridInputError, match="different grids"):
        small = evaluation.DifferencePlanes(
            "classic",
            np.zeros((8, 8)),
            np.zeros((8, 8)),
            np.zeros((8, 8)),
            np.zeros((8, 8)),
            np.zeros((8, 8), bool),
            np.ones((8, 8), bool),
        )
        figures.plot_zogy_vs_classic(synthetic, small, positions)


def _planes(shape, S_corr, method="zogy"):
    zero = np.zeros(shape)
    return evaluation.DifferencePlanes(
        method, zero, zero, S_corr, S_corr, np.zeros(shape, bool), np.ones(shape, bool)
    )


def test_plot_methods_at_stars_one_column_per_method(synthetic):
    results = {
        "Gaussian": _planes(synthetic.S_corr.shape, synthetic.S_corr * 3, "classic"),
        "fitted kernel": _planes(synthetic.S_corr.shape, synthetic.S_corr * 2, "kernel"),
        "ZOGY": synthetic,
    }
    positions = np.array([[40.0, 40.0], [90.0, 80.0]])
    fig = figures.plot_methods_at_stars(results, positions, size=21, science=synthetic.science)
    axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(axes) == 2 * 4
    assert [ax.get_title() for ax in axes[:4]] == [
        "science",
        r"Gaussian $S_\mathrm{corr}$",
        r"fitted kernel $S_\mathrm{corr}$",
        r"ZOGY $S_\mathrm{corr}$",
    ]
    assert [ax.get_ylabel() for ax in axes[::4]] == ["(40, 40)", "(90, 80)"]
    peaks = [[float(t.get_text().split()[-1]) for t in ax.texts] for ax in axes]
    assert peaks[0] == [] and all(len(p) == 1 for p in peaks[1:4])
    assert peaks[1][0] == pytest.approx(3 * peaks[3][0], rel=0.05)
    assert peaks[2][0] == pytest.approx(2 * peaks[3][0], rel=0.05)
    # without science=, the first result's science image is shown
    (only,) = figures.plot_methods_at_stars({"ZOGY": synthetic}, positions[:1]).axes[:1]
    assert only.get_title() == "science"


def test_plot_methods_at_stars_refuses_bad_results(synthetic):
    positions = [[40.0, 40.0]]
    small = _planes((8, 8), np.zeros((8, 8)))
    with pytest.raises(AstridInputError, match="results: expected a non-empty dict"):
        figures.plot_methods_at_stars([synthetic], positions)
    with pytest.raises(AstridInputError, match="empty"):
        figures.plot_methods_at_stars({}, positions)
    with pytest.raises(AstridInputError, match=r"results\['small'\].*different grids"):
        figures.plot_methods_at_stars({"ZOGY": synthetic, "small": small}, positions)
    with pytest.raises(AstridInputError, match="different grids"):
        figures.plot_methods_at_stars({"small": small}, positions, science=synthetic.science)
    with pytest.raises(AstridInputError, match=r"results\['S'\]: expected a DifferenceResult"):
        figures.plot_methods_at_stars({"S": synthetic.S_corr}, positions)
    with pytest.raises(AstridInputError, match="no star"):
        figures.plot_methods_at_stars({"ZOGY": synthetic}, np.zeros((0, 2)))


# --------------------------------------------------------------------------- kernel


def _kernel_panels(fig):
    """{(x, y) from the title: (the panel's kernel, the sum written on it)}."""
    out = {}
    for ax in fig.axes:
        if ax.get_images():
            x, y = (float(v) for v in ax.get_title().strip("()").split(","))
            (label,) = [t.get_text() for t in ax.texts]
            assert label.startswith("sum ")
            out[(x, y)] = (np.asarray(ax.get_images()[0].get_array()), float(label.split()[1]))
    return out


def _assert_sums(panels, model, n):
    """One panel per position of model.grid(n), each labelled with the kernel's sum there."""
    xs, ys, _ = model.grid(n)
    assert sorted(panels) == sorted((round(x), round(y)) for x in xs for y in ys)
    for x in xs:
        for y in ys:
            label = panels[(round(x), round(y))][1]
            assert label == pytest.approx(float(model.kernel_sum(x, y)), abs=6e-5)


def test_plot_kernel_grid_of_a_kernel_difference(kernel_difference):
    model = kernel_difference.subtraction.model
    for given in (kernel_difference, kernel_difference.subtraction, model):
        fig = figures.plot_kernel_grid(given, n=3)
        panels = _kernel_panels(fig)
        _assert_sums(panels, model, 3)
        assert {kernel.shape for kernel, _ in panels.values()} == {(2 * model.half_width + 1,) * 2}
        assert fig.get_suptitle().startswith(f"kernel ({model.convolved} convolved)")
        plt.close(fig)


def test_plot_kernel_grid_shows_a_varying_kernel_on_one_scale():
    from astrid.kernel import KernelModel, alard_lupton_basis

    basis = alard_lupton_basis(5, sigmas=[1.0, 2.0], degrees=[2, 0])
    coefficients = np.zeros((basis.size, 3))  # spatial degree 1: terms 1, x, y
    coefficients[0] = [1.0, 0.1, -0.05]  # the sum: 0.95 at (0, 0), 1.15 at (nx - 1, 0)
    coefficients[1] = [0.0, 0.3, 0.2]
    model = KernelModel(basis, coefficients, 1, 1, 0, np.zeros(1), (200, 300), "reference")
    fig = figures.plot_kernel_grid(model, n=4, title="varying")
    panels = _kernel_panels(fig)
    assert len(panels) == 16 and fig.get_suptitle() == "varying"
    assert panels[(0.0, 0.0)][1] == pytest.approx(0.95, abs=1e-4)
    assert panels[(299.0, 0.0)][1] == pytest.approx(1.15, abs=1e-4)
    _assert_sums(panels, model, 4)
    for x, y in ((0.0, 0.0), (299.0, 199.0)):  # corners: titles give the exact positions
        np.testing.assert_allclose(panels[(x, y)][0], model.at(x, y))
    limits = {im.get_clim() for ax in fig.axes for im in ax.get_images()}
    assert len(limits) == 1  # one colour scale
    (vmin, vmax) = limits.pop()
    assert vmin == -vmax and vmax == pytest.approx(np.abs(model.grid(4)[2]).max())
    # the bottom-left panel is the image's (0, 0), the top-right its (nx - 1, ny - 1)
    image_axes = [ax for ax in fig.axes if ax.get_images()]
    assert image_axes[0].get_title() == "(0, 199)" and image_axes[-1].get_title() == "(299, 0)"


def test_plot_kernel_grid_refuses_what_holds_no_kernel(kernel_difference, synthetic):
    import dataclasses

    zogy_like = dataclasses.replace(kernel_difference, method="zogy")
    with pytest.raises(AstridInputError, match="model: a DifferenceResult of method 'zogy'"):
        figures.plot_kernel_grid(zogy_like)
    with pytest.raises(AstridInputError, match="model: expected a KernelModel"):
        figures.plot_kernel_grid(synthetic)  # planes read back from FITS hold no kernel
    with pytest.raises(AstridInputError, match="n: panels per side"):
        figures.plot_kernel_grid(kernel_difference, n=1)
    with pytest.raises(AstridInputError, match="n: panels per side"):
        figures.plot_kernel_grid(kernel_difference, n=2.5)


# --------------------------------------------------------------------------- triplets


def test_select_examples_balances_classes():
    ds = _triplet_dataset(10)
    chosen = figures.select_examples(ds, 4)
    labels = ds["label"].values[chosen]
    assert list(labels) == [1, 1, 0, 0]
    only_bogus = ds.isel(candidate=np.flatnonzero(ds["label"].values == 0))
    assert list(figures.select_examples(only_bogus, 3)) == [0, 1, 2]
    random = figures.select_examples(ds, 4, seed=1)
    assert sorted(ds["label"].values[random].tolist()) == [0, 0, 1, 1]
    unlabelled = ds.drop_vars(["label"])
    assert list(figures.select_examples(unlabelled, 3)) == [0, 1, 2]


def test_plot_triplets_grid():
    ds = _triplet_dataset(8)
    scores = np.linspace(0, 1, 8)
    fig = figures.plot_triplets(ds, n=4, scores=scores)
    assert len(_images(fig)) == 12
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[0].startswith("supernova") and "s=" in titles[0]
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["science", "reference", "difference"]
    fig = figures.plot_triplets(ds, indices=[7])
    assert len(_images(fig)) == 3
    with pytest.raises(AstridInputError, match="indices"):
        figures.plot_triplets(ds, indices=[99])


# --------------------------------------------------------------------------- completeness


def test_plot_completeness(completeness_inputs):
    candidates, truth = completeness_inputs
    fig = figures.plot_completeness(candidates, truth, snr_bins=[1, 3, 10, 100], threshold=5)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.texts] == ["1", "1", "3"]
    assert ax.get_legend() is not None


# --------------------------------------------------------------------------- export


def test_plot_int8_vs_float():
    a = np.linspace(0.02, 0.98, 50)  # no score within 1/512 of the threshold
    b = np.round(a * 256) / 256  # int8 output steps
    b[0], a[0] = 0.51, 0.49  # one decision flips
    labels = (a > 0.5).astype(int)
    fig = figures.plot_int8_vs_float(a, b, labels=labels)
    scatter_ax, hist_ax = fig.axes
    assert len(scatter_ax.collections) == 2
    assert "flipped at 0.5: 1" in hist_ax.texts[0].get_text()
    fig = figures.plot_int8_vs_float(a, b)
    assert len(fig.axes[0].collections) == 1
    with pytest.raises(AstridInputError, match="equally long"):
        figures.plot_int8_vs_float(a, b[:3])
    with pytest.raises(AstridInputError, match="NaN"):
        figures.plot_int8_vs_float(np.array([np.nan]), np.array([0.1]))
    with pytest.raises(AstridInputError, match="labels"):
        figures.plot_int8_vs_float(a, b, labels=labels[:4])


# --------------------------------------------------------------------------- training


def test_plot_training_history():
    history = {
        "loss": [0.7, 0.5, 0.4],
        "val_loss": [0.72, 0.6, 0.55],
        "auc": [0.6, 0.8, 0.9],
        "val_auc": [0.55, 0.75, 0.85],
    }
    fig = figures.plot_training_history(history)
    loss_ax, auc_ax = fig.axes
    assert [len(line.get_xdata()) for line in loss_ax.get_lines()] == [3, 3]
    assert auc_ax.get_ylabel() == "AUC"
    fig = figures.plot_training_history({"loss": [0.7]})
    assert len(fig.axes) == 1 and len(fig.axes[0].get_lines()) == 1
    with pytest.raises(AstridInputError, match="loss"):
        figures.plot_training_history({"val_loss": [1.0]})


def test_pyplot_is_matplotlib_pyplot_without_a_gui_backend():
    plt_module = figures.pyplot()
    assert plt_module is plt
    assert matplotlib.get_backend().lower() == "agg"


def test_style_keeps_interactive_mode_switched_on_inside():
    """Jupyter's inline backend turns interactive mode on at the first figure; leaving the style must keep it."""
    was = matplotlib.is_interactive()
    try:
        matplotlib.interactive(False)
        with figures.style():
            assert plt.rcParams["xtick.direction"] == "in"
            matplotlib.interactive(True)
        assert matplotlib.is_interactive()
        assert (
            plt.rcParams["xtick.direction"] != "in"
            or matplotlib.rcParamsDefault["xtick.direction"] == "in"
        )
    finally:
        matplotlib.interactive(was)


def test_zogy_vs_classic_measures_the_residual_at_the_star_only():
    shape = (64, 64)
    zero = np.zeros(shape)
    zogy_S, classic_S = zero.copy(), zero.copy()
    classic_S[32, 34] = 9.0  # a ring residual 2 px from the star
    classic_S[32, 50] = 99.0  # another source 18 px away, inside the cut-out
    zogy_S[33, 32] = -2.0
    planes = [
        evaluation.DifferencePlanes(
            m, zero, zero, S, S, np.zeros(shape, bool), np.ones(shape, bool)
        )
        for m, S in (("zogy", zogy_S), ("classic", classic_S))
    ]
    fig = figures.plot_zogy_vs_classic(
        planes[0], planes[1], [[32.0, 32.0]], size=41, residual_radius=6
    )
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert labels == ["max |S| 9.0", "max |S| 2.0"]
