"""Tests of astrid.widgets.TripletInspector: rendering, labels on disk, order, export."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("ipywidgets", reason="ipywidgets (astrid[notebooks]) is not installed")

from astropy.table import Table  # noqa: E402

from astrid.errors import AstridFileError, AstridInputError, AstridWarning  # noqa: E402
from astrid.schema import new_triplet_dataset  # noqa: E402
from astrid.widgets import (  # noqa: E402
    KEYS,
    NO_DATA_RGBA,
    LabelStore,
    TripletInspector,
    stamp_to_rgba,
    triplet_pngs,
)

N = 12
SCORES = np.array([0.95, 0.1, 0.55, 0.48, np.nan, 0.7, 0.3, 0.02, 0.5, 0.9, 0.61, 0.42])


def make_dataset(n=N, seed=3):
    """Small triplet set: a Gaussian source in science and difference, noise, one NaN-padded stamp."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:63, :63]
    source = np.exp(-((xx - 31) ** 2 + (yy - 31) ** 2) / (2 * 2.0**2))
    stamps = rng.normal(0, 1, (n, 63, 63, 3)).astype(np.float32)
    flux = rng.uniform(5, 50, n)
    stamps[..., 0] += 100 + flux[:, None, None] * source
    stamps[..., 1] += 100
    stamps[..., 2] += flux[:, None, None] * source
    stamps[0, :20] = np.nan  # a cut-out at the image edge
    coords = {
        "candidate_id": [f"c{i:02d}" for i in range(n)],
        "mag": rng.uniform(17, 21, n),
        "fwhm": rng.uniform(1.5, 3.5, n),
        "field": np.array(["f01"] * n, dtype=object),
    }
    ds = new_triplet_dataset(stamps, coords=coords, attrs={"source": "test"})
    ds["mag"].attrs["units"] = "mag"
    return ds


@pytest.fixture
def dataset():
    return make_dataset()


@pytest.fixture
def labels_path(tmp_path):
    return tmp_path / "labels" / "field01.jsonl"


def read_lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- rendering ----------------------------------------------------------------
def test_stamps_render_with_zscale_and_symmetric_difference():
    stamp = np.zeros((63, 63))
    stamp[31, 31] = 10.0
    stamp[0, 0] = -10.0
    stamp[5, 5] = np.nan
    rgba = stamp_to_rgba(stamp, "difference", stretch="linear", scale=2)
    assert rgba.shape == (126, 126, 4) and rgba.dtype == np.uint8
    flipped = lambda row, col: rgba[2 * (62 - row), 2 * col]  # noqa: E731 - row 0 is drawn at the bottom
    assert tuple(flipped(5, 5)) == NO_DATA_RGBA
    assert flipped(31, 31)[0] == 255 and flipped(0, 0)[0] == 0
    assert abs(int(flipped(10, 40)[0]) - 128) <= 1  # zero is mid-grey
    science = np.random.default_rng(0).normal(100, 1, (63, 63))
    grey = stamp_to_rgba(science, "science", scale=1)[..., 0]
    assert (
        0 < np.median(grey) < 255 and grey.min() == 0 and grey.max() == 255
    )  # zscale spreads the noise
    pngs = triplet_pngs(np.dstack([science, science, stamp]))
    assert len(pngs) == 3 and all(p.startswith(b"\x89PNG") for p in pngs)
    with pytest.raises(AstridInputError, match="kind 'noise'"):
        stamp_to_rgba(stamp, "noise")
    with pytest.raises(AstridInputError, match="stretch 'log'"):
        stamp_to_rgba(stamp, "difference", stretch="log")


def test_asinh_difference_lifts_faint_residuals():
    stamp = np.zeros((63, 63))
    stamp[31, 31], stamp[10, 10] = 100.0, 5.0
    linear = stamp_to_rgba(stamp, "difference", stretch="linear", scale=1)
    asinh = stamp_to_rgba(stamp, "difference", stretch="asinh", scale=1)
    faint = (62 - 10, 10)
    assert asinh[faint][0] > linear[faint][0] > 128


# -- the widget -------------------------------------------------------------
def test_inspector_shows_first_candidate_with_features(dataset, labels_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    assert inspector.current_id == "c00"
    assert all(bytes(image.value).startswith(b"\x89PNG") for image in inspector.stamp_images)
    table = inspector.features_html.value
    assert (
        "c00" in table
        and "mag [mag]" in table
        and "fwhm" in table
        and "0.95" in table
        and "f01" in table
    )
    bundle = inspector._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert "astrid-triplet-inspector" in inspector.widget._dom_classes
    assert [b.description for b in inspector.label_buttons.values()] == ["Real", "Bogus", "Skip"]
    assert not labels_path.exists()  # nothing written before the first label


def test_each_click_is_on_disk_at_once(dataset, labels_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    inspector.label_buttons["real"].click()
    lines = read_lines(labels_path)
    assert [(r["candidate_id"], r["label"]) for r in lines] == [("c00", "real")]
    assert lines[0]["score"] == pytest.approx(0.95) and lines[0]["time"].endswith("Z")
    assert inspector.current_id == "c01"  # labelling moves on
    inspector.label_buttons["bogus"].click()
    inspector.label_buttons["skip"].click()
    assert [(r["candidate_id"], r["label"]) for r in read_lines(labels_path)] == [
        ("c00", "real"),
        ("c01", "bogus"),
        ("c02", "skip"),
    ]
    inspector.previous_button.click()
    inspector.previous_button.click()
    assert inspector.current_id == "c01"
    inspector.label_buttons["real"].click()  # relabel: appended, newest wins
    assert len(read_lines(labels_path)) == 4
    assert inspector.labels == {"c00": "real", "c01": "real", "c02": "skip"}
    assert "2 real, 0 bogus" in inspector.status_html.value


def test_reopening_the_label_file_restores_labels(dataset, labels_path):
    first = TripletInspector(dataset, labels_path=labels_path)
    first.label("bogus", candidate="c05")
    first.label("real", candidate="c07")
    second = TripletInspector(dataset, labels_path=labels_path)
    assert second.labels == {"c05": "bogus", "c07": "real"}
    second.go_to("c05")
    assert "bogus" in second.features_html.value
    second.label("real")
    assert TripletInspector(dataset, labels_path=labels_path).labels["c05"] == "real"


def test_no_label_line_is_ever_deleted_and_bad_lines_are_quarantined(dataset, labels_path):
    labels_path.parent.mkdir(parents=True)
    good = json.dumps({"candidate_id": "c03", "label": "real", "time": "2025-01-01T00:00:00Z"})
    torn = '{"candidate_id": "c04", "lab'
    labels_path.write_text(good + "\n" + torn)
    with pytest.warns(
        AstridWarning, match=r"1 line\(s\) are not label records.*1 label record\(s\) loaded"
    ):
        inspector = TripletInspector(dataset, labels_path=labels_path)
    assert inspector.labels == {"c03": "real"}
    inspector.label("bogus", candidate="c04")
    lines = labels_path.read_text().splitlines()
    assert (
        lines[:2] == [good, torn] and json.loads(lines[2])["candidate_id"] == "c04"
    )  # torn line kept, closed
    side = labels_path.with_name(labels_path.name + ".quarantine")
    assert json.loads(side.read_text())["text"] == torn
    with pytest.warns(AstridWarning, match="not label records"):
        assert LabelStore(labels_path).labels == {"c03": "real", "c04": "bogus"}
    assert len(side.read_text().splitlines()) == 1  # quarantined once, however often it is opened

    labels_path.write_text(good)  # complete record without its newline: kept, file untouched
    assert LabelStore(labels_path).labels == {"c03": "real"}
    assert labels_path.read_text() == good
    store = LabelStore(labels_path)
    store.add("c05", "skip")
    assert [json.loads(line)["candidate_id"] for line in labels_path.read_text().splitlines()] == [
        "c03",
        "c05",
    ]

    # a valid-JSON last record with an unknown label and no newline (was: deleted on open)
    unknown = good.replace("real", "maybe").replace("c03", "c09")
    labels_path.write_text(good + "\n" + unknown)
    with pytest.warns(AstridWarning, match="label 'maybe'"):
        assert LabelStore(labels_path).labels == {"c03": "real"}
    assert labels_path.read_text() == good + "\n" + unknown

    labels_path.write_text("not json\n" + good + "\n")
    with pytest.warns(AstridWarning, match="line 1 is not a label record"):
        TripletInspector(dataset, labels_path=labels_path)
    labels_path.write_text(
        good.replace("real", "maybe") + "\n"
    )  # nothing but bad lines: not a label file
    with pytest.raises(AstridFileError, match="none of its 1 line"):
        LabelStore(labels_path)


def test_sort_and_filter_by_features_and_score(dataset, labels_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    mag = dataset["mag"].values
    np.testing.assert_array_equal(inspector.sort_by("mag"), np.argsort(mag))
    np.testing.assert_array_equal(inspector.sort_by("mag", ascending=False), np.argsort(-mag))
    by_score = inspector.sort_by("score", ascending=False)
    assert by_score[-1] == 4  # NaN score last
    assert list(by_score[:2]) == [0, 9]

    inspector.sort_by("mag", ascending=False)
    order = inspector.filter("mag", min=18, max=20)
    assert set(order) == set(np.flatnonzero((mag >= 18) & (mag <= 20)))
    assert np.all(np.diff(mag[order]) <= 0)  # the filter keeps the sort
    inspector.reset_filter()
    assert len(inspector.order) == N

    inspector.sort_by("dataset order")
    inspector.label("real", candidate="c00")
    inspector.label("bogus", candidate="c01")
    assert list(inspector.filter(unlabelled_only=True)[:2]) == [2, 3]
    inspector.go_to(0)
    inspector.label_buttons["real"].click()
    assert inspector.labels["c02"] == "real" and inspector.current_id == "c03"
    assert 2 not in inspector.filter(
        unlabelled_only=True
    )  # hidden once the filter is applied again

    with pytest.raises(AstridInputError, match="'field' is not numeric"):
        inspector.sort_by("field")
    with pytest.raises(AstridInputError, match="cannot sort or filter by it"):
        inspector.sort_by("brightness")


def test_controls_drive_the_order(dataset, labels_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    fwhm = dataset["fwhm"].values
    inspector.sort_dropdown.value = "fwhm"
    np.testing.assert_array_equal(inspector.order, np.argsort(fwhm))
    inspector.descending_box.value = True
    np.testing.assert_array_equal(inspector.order, np.argsort(-fwhm))
    inspector.filter_dropdown.value = "fwhm"
    inspector.filter_min.value = "2.5"
    assert np.all(fwhm[inspector.order] >= 2.5) and len(inspector.order) == np.sum(fwhm >= 2.5)
    inspector.filter_min.value = "abc"
    assert "is not a number" in inspector.status_html.value
    inspector.filter_min.value = "99"
    assert len(inspector.order) == 0 and inspector.current_id is None
    assert "no candidate matches the filter" in inspector.status_html.value
    assert inspector.label_buttons["real"].disabled


def test_uncertain_first_puts_scores_near_one_half_first(dataset, labels_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    order = inspector.uncertain_first()
    distance = np.abs(SCORES[order] - 0.5)
    assert list(order[:3]) == [8, 3, 2]  # 0.5, 0.48, 0.55
    assert np.all(np.diff(distance[:-1]) >= 0) and np.isnan(distance[-1])
    assert inspector.current_id == "c00"  # the candidate on show stays on show
    inspector.go_to(0)
    assert inspector.current_id == "c08"
    without_scores = TripletInspector(dataset, labels_path=labels_path)
    with pytest.raises(AstridInputError, match="needs scores"):
        without_scores.uncertain_first()


def test_scores_by_name_by_id_and_bad_scores(dataset, labels_path):
    dataset = dataset.assign_coords(drb=("candidate", SCORES))
    by_name = TripletInspector(dataset, scores="drb", labels_path=labels_path)
    np.testing.assert_array_equal(by_name.scores, SCORES)
    xr = pytest.importorskip("xarray")
    shuffled = np.arange(N)[::-1]
    as_array = xr.DataArray(
        SCORES[shuffled],
        dims="candidate",
        coords={"candidate_id": ("candidate", [f"c{i:02d}" for i in shuffled])},
    )
    np.testing.assert_array_equal(
        TripletInspector(dataset, scores=as_array, labels_path=labels_path).scores, SCORES
    )
    with pytest.raises(AstridInputError, match="3 value"):
        TripletInspector(dataset, scores=[0.1, 0.2, 0.3], labels_path=labels_path)
    with pytest.raises(AstridInputError, match=r"probabilities in \[0, 1\]"):
        TripletInspector(dataset, scores=np.linspace(-5, 30, N), labels_path=labels_path)
    with pytest.raises(AstridInputError, match="no 1-D variable of that name"):
        TripletInspector(dataset, scores="rb", labels_path=labels_path)


def test_export_labels_for_retraining(dataset, labels_path, tmp_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    inspector.label("real", candidate="c00")
    inspector.label("skip", candidate="c01")
    inspector.label("bogus", candidate="c02")
    inspector.label("bogus", candidate="c00")
    table = Table.read(inspector.export_labels(tmp_path / "labels.ecsv"))
    assert list(table["candidate_id"]) == ["c02", "c00"]
    assert list(table["label"]) == ["bogus", "bogus"]
    assert table["score"][1] == pytest.approx(0.95)
    assert set(table.colnames) >= {"candidate_id", "label", "time"}
    csv = Table.read(
        inspector.export_labels(tmp_path / "labels.csv", include_skipped=True), format="ascii.csv"
    )
    assert sorted(csv["candidate_id"]) == ["c00", "c01", "c02"]
    with pytest.raises(AstridInputError, match="must be .csv or .ecsv"):
        inspector.export_labels(tmp_path / "labels.txt")


def test_keyboard_shortcuts(dataset, labels_path):
    inspector = TripletInspector(dataset, labels_path=labels_path)
    assert inspector.handle_key("ArrowRight") and inspector.current_id == "c01"
    assert inspector.handle_key("p") and inspector.current_id == "c00"
    assert inspector.handle_key("R")
    assert inspector.labels == {"c00": "real"} and inspector.current_id == "c01"
    assert not inspector.handle_key("x")
    inspector.shortcut_box.value = "b"  # what typing into the shortcut box does
    assert inspector.labels["c01"] == "bogus" and inspector.shortcut_box.value == ""
    assert set(KEYS.values()) == {"real", "bogus", "skip", "next", "previous"}


def test_ipyevents_keys_when_installed(dataset, labels_path):
    pytest.importorskip(
        "ipyevents", reason="ipyevents is optional (keyboard capture on the whole widget)"
    )
    inspector = TripletInspector(dataset, labels_path=labels_path)
    assert inspector.key_events is not None
    inspector.on_key_event({"type": "keydown", "key": "s"})
    assert inspector.labels == {"c00": "skip"}


def test_grid_view_pages_and_opens_a_candidate(dataset, labels_path):
    inspector = TripletInspector(dataset, labels_path=labels_path, grid_shape=(2, 3))
    inspector.label("real", candidate="c01")
    inspector.view_toggle.value = "Grid"
    assert (
        inspector.grid_view.layout.display is None
        and inspector.single_view.layout.display == "none"
    )
    buttons = [cell[2] for cell in inspector.grid_cells]
    assert [b.description for b in buttons] == ["c00", "c01", "c02", "c03", "c04", "c05"]
    assert inspector.grid_cells[1][0].layout.border.endswith("#2e7d32")  # labelled real: green
    assert all(bytes(cell[1].value).startswith(b"\x89PNG") for cell in inspector.grid_cells)
    inspector.page_next_button.click()
    inspector.page_next_button.click()  # past the last page: stays
    assert [b.description for b in buttons] == ["c06", "c07", "c08", "c09", "c10", "c11"]
    assert "page 2 of 2" in inspector.page_label.value
    buttons[2].click()
    assert inspector.current_id == "c08" and inspector.view_toggle.value == "One by one"


def test_bad_input_is_a_clear_error(dataset, labels_path):
    with pytest.raises(AstridInputError, match="expected an xarray.Dataset"):
        TripletInspector(np.zeros((3, 63, 63, 3)), labels_path=labels_path)
    with pytest.raises(AstridInputError, match="no data variable 'triplets'"):
        TripletInspector(dataset.drop_vars("triplets"), labels_path=labels_path)
    with pytest.raises(AstridFileError, match="is a folder"):
        TripletInspector(dataset, labels_path=labels_path.parent.parent)
    inspector = TripletInspector(dataset, labels_path=labels_path)
    with pytest.raises(AstridInputError, match="label 'maybe'"):
        inspector.label("maybe")
    with pytest.raises(AstridInputError, match="'nope' is not in the dataset"):
        inspector.go_to("nope")


def test_labels_record_labeller_and_proposing_model(dataset, labels_path, tmp_path):
    from astrid.widgets import default_labeller, model_id

    model_file = tmp_path / "vgg6-sim.keras"
    model_file.write_bytes(b"stand-in model bytes")
    inspector = TripletInspector(
        dataset, scores=SCORES, labels_path=labels_path, labeller="ann", model=model_file
    )
    inspector.label("real", candidate="c02")
    line = read_lines(labels_path)[0]
    assert line["labeller"] == "ann"
    assert line["model"] == model_id(model_file) and line["model"].startswith("vgg6-sim sha256:")
    assert len(line["model"].split("sha256:")[1]) == 16
    # Without a name the login name is recorded; the model is optional.
    other = TripletInspector(dataset, labels_path=tmp_path / "b.jsonl")
    other.label("bogus", candidate="c03")
    assert read_lines(tmp_path / "b.jsonl")[0]["labeller"] == default_labeller()
    assert "model" not in read_lines(tmp_path / "b.jsonl")[0]
    table = Table.read(inspector.export_labels(tmp_path / "labels.ecsv"))
    assert list(table["labeller"]) == ["ann"] and list(table["model"]) == [line["model"]]
    with pytest.raises(AstridInputError, match="labeller"):
        TripletInspector(dataset, labels_path=labels_path, labeller="  ")
    with pytest.raises(AstridFileError, match="does not exist"):
        TripletInspector(dataset, labels_path=labels_path, model=tmp_path / "missing.keras")


def test_show_only_a_queried_batch(dataset, labels_path):
    inspector = TripletInspector(dataset, scores=SCORES, labels_path=labels_path)
    assert inspector.show_only(["c05", 1, "c05"]).tolist() == [5, 1]
    assert inspector.current_id == "c05"
    inspector.label("real")
    assert inspector.current_id == "c01"
    with pytest.raises(AstridInputError, match="not in the dataset"):
        inspector.show_only(["nope"])
    with pytest.raises(AstridInputError, match="position 99"):
        inspector.show_only([99])
    with pytest.raises(AstridInputError, match="none given"):
        inspector.show_only([])
