"""TripletInspector: look at candidates one by one or in a grid, and label them."""

from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..errors import AstridInputError
from ..schema import CHANNELS, validate_triplets
from ._labels import LABELS, LabelStore
from ._render import triplet_pngs, triplet_strip_png

__all__ = ["TripletInspector", "KEYS"]

#: Keyboard shortcuts: key -> action. Arrow keys need ``ipyevents``; the
#: letters also work typed into the inspector's shortcut box.
KEYS = {
    "r": "real",
    "b": "bogus",
    "s": "skip",
    "ArrowRight": "next",
    "n": "next",
    ".": "next",
    "ArrowLeft": "previous",
    "p": "previous",
    ",": "previous",
}
#: Orders that are not a feature name.
ORDER_INDEX, ORDER_SCORE, ORDER_UNCERTAIN = "dataset order", "score", "uncertain first"
_NO_FILTER = ""  # a Dropdown value of None would show as an empty box
_LABEL_COLOURS = {"real": "#2e7d32", "bogus": "#c62828", "skip": "#757575", None: "#d0d0d0"}
_BUTTON_STYLE = {"real": "success", "bogus": "danger", "skip": ""}
_BUTTON_HELP = {
    "real": "Label this candidate real (key r)",
    "bogus": "Label this candidate bogus (key b)",
    "skip": "Seen, undecided: record a skip (key s)",
}


def _format_value(value: Any) -> str:
    if isinstance(value, (float, np.floating)):
        return "NaN" if not np.isfinite(value) else f"{value:.5g}"
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return str(value)


class TripletInspector:
    """Look at triplets one by one or in a grid, sort and filter them, label them.

    Labels are appended to ``labels_path`` (JSON lines, flushed and fsync'ed
    per click) as they are made, and reloaded when an inspector opens the same
    file again. Labelling moves on to the next candidate.

    Parameters
    ----------
    dataset : xarray.Dataset
        Triplets in the AstrID schema (:func:`astrid.schema.validate_triplets`):
        ``triplets`` of dims ``(candidate, y, x, channel)`` and a unique
        ``candidate_id``; every other 1-D coordinate or variable along
        ``candidate`` is shown as a feature, and the numeric ones can sort and
        filter.
    scores : str, array-like or xarray.DataArray, optional
        Real/bogus probabilities in [0, 1], one per candidate (NaN: not
        scored): an array in dataset order, a DataArray with ``candidate_id``
        (matched by id), or the name of a coordinate or variable of
        ``dataset`` (e.g. ``"drb"`` for ZTF alerts). Needed for the score and
        "uncertain first" orders.
    labels_path : str or path-like, optional
        Label file; default ``triplet_labels.jsonl`` in the working folder.
    stamp_scale : int, optional
        Screen pixels per stamp pixel in the one-by-one view.
    difference_stretch : {"asinh", "linear"}, optional
        Stretch of the difference stamp (symmetric around zero).
    grid_shape : (int, int), optional
        Rows and columns of thumbnails per page of the grid view (the
        thumbnails wrap to the width of the notebook).
    thumbnail_scale : int, optional
        Screen pixels per stamp pixel in the grid view.
    labeller : str, optional
        Who labels, written with every label (default: the login name).
    model : str, path-like or keras.Model, optional
        The model whose scores proposed these candidates, written with every
        label as its name and file hash (:func:`astrid.widgets.model_id`), so
        :func:`astrid.braai.apply_labels` can tell which model asked.

    Attributes
    ----------
    widget : ipywidgets.VBox
        The widget; a notebook displays the inspector itself, or this.
    order : numpy.ndarray of int
        Dataset positions of the candidates in the current sort and filter.
    label_buttons : dict of str to ipywidgets.Button
        Real, Bogus and Skip; ``previous_button``, ``next_button``,
        ``page_previous_button``, ``page_next_button``, ``shortcut_box``,
        ``sort_dropdown``, ``descending_box``, ``filter_dropdown``,
        ``filter_min``, ``filter_max``, ``unlabelled_box`` and ``view_toggle``
        are the other controls.
    stamp_images : list of ipywidgets.Image
        The PNG stamps of the one-by-one view, in :data:`astrid.schema.CHANNELS` order.
    features_html, status_html, page_label : ipywidgets.HTML
        The candidate's feature table, the status line (position, label
        counts, label file or an input error) and the grid's page number.
    single_view, grid_view : ipywidgets.VBox
        The two views; the one not shown has ``layout.display == "none"``.
    grid_cells : list of (ipywidgets.VBox, ipywidgets.Image, ipywidgets.Button)
        The thumbnail slots of a grid page: frame (border in the label's
        colour), thumbnail strip and the button that opens the candidate.
    key_events : ipyevents.Event or None
        Keyboard capture on the whole widget; None without ipyevents.

    Examples
    --------
    >>> from astrid.score import score                                  # doctest: +SKIP
    >>> inspector = TripletInspector(ds, scores=score(ds, model),
    ...                              labels_path="labels/field01.jsonl")  # doctest: +SKIP
    >>> inspector.uncertain_first()                                     # doctest: +SKIP
    >>> inspector                                                       # doctest: +SKIP
    """

    def __init__(
        self,
        dataset,
        scores=None,
        labels_path: str | os.PathLike | None = None,
        *,
        stamp_scale: int = 3,
        difference_stretch: str = "asinh",
        grid_shape: tuple[int, int] = (3, 3),
        thumbnail_scale: int = 2,
        labeller: str | None = None,
        model=None,
    ):
        self._widgets = require("ipywidgets", "TripletInspector")
        self.dataset = validate_triplets(dataset, "dataset")
        self.n = int(self.dataset.sizes["candidate"])
        if self.n == 0:
            raise AstridInputError("dataset: holds no candidates")
        self.ids = [str(v) for v in self.dataset["candidate_id"].values]
        self._position_of = {cid: i for i, cid in enumerate(self.ids)}
        self.scores = self._resolve_scores(scores)
        self.features = self._collect_features()
        if difference_stretch not in ("asinh", "linear"):
            raise AstridInputError(
                f"difference_stretch {difference_stretch!r}: expected 'asinh' or 'linear'"
            )
        if len(grid_shape) != 2 or min(grid_shape) < 1:
            raise AstridInputError(
                f"grid_shape {grid_shape!r}: expected (rows, columns), both >= 1"
            )
        for name, value in (("stamp_scale", stamp_scale), ("thumbnail_scale", thumbnail_scale)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise AstridInputError(f"{name} {value!r}: expected a positive integer")
        self.stamp_scale = int(stamp_scale)
        self.thumbnail_scale = int(thumbnail_scale)
        self.difference_stretch = difference_stretch
        self.grid_shape = (int(grid_shape[0]), int(grid_shape[1]))
        self.labels_path = Path(labels_path if labels_path is not None else "triplet_labels.jsonl")
        self.store = LabelStore(self.labels_path, labeller=labeller, model=model)

        self._sort_key = ORDER_INDEX
        self._ascending = True
        self._filter: tuple[str | None, float | None, float | None] = (None, None, None)
        self._unlabelled_only = False
        self.order = np.arange(self.n)
        self._cursor = 0
        self._page = 0
        self._mode = "single"
        self._syncing = False
        self._build()
        self._refresh()

    # -- data ---------------------------------------------------------------
    def _resolve_scores(self, scores) -> np.ndarray | None:
        if scores is None:
            return None
        ds = self.dataset
        if isinstance(scores, str):
            if scores not in ds.variables or ds[scores].dims != ("candidate",):
                along = sorted(str(k) for k in ds.variables if ds[k].dims == ("candidate",))
                raise AstridInputError(
                    f"scores {scores!r}: no 1-D variable of that name along 'candidate' (has {along})"
                )
            values = np.asarray(ds[scores].values, dtype=float)
            name = f"dataset[{scores!r}]"
        elif hasattr(scores, "dims") and "candidate_id" in getattr(scores, "coords", {}):
            ids = [str(v) for v in scores["candidate_id"].values]
            by_id = dict(zip(ids, np.asarray(scores.values, dtype=float).ravel()))
            missing = [cid for cid in self.ids if cid not in by_id]
            if missing:
                raise AstridInputError(
                    f"scores: no score for {len(missing)} candidate(s), e.g. {missing[:3]}"
                )
            values = np.array([by_id[cid] for cid in self.ids], dtype=float)
            name = "scores"
        else:
            try:
                values = np.asarray(scores, dtype=float).ravel()
            except (TypeError, ValueError):
                raise AstridInputError(
                    f"scores: expected numbers, got {type(scores).__name__}"
                ) from None
            name = "scores"
        if values.shape != (self.n,):
            raise AstridInputError(f"{name}: {values.size} value(s) for {self.n} candidates")
        finite = values[np.isfinite(values)]
        if finite.size and (finite.min() < 0 or finite.max() > 1):
            raise AstridInputError(
                f"{name}: values span [{finite.min():.3g}, {finite.max():.3g}]; expected real/bogus "
                "probabilities in [0, 1] (detect()'s 'score' is S_corr in sigma, not a probability)"
            )
        return values

    def _collect_features(self) -> dict[str, np.ndarray]:
        ds = self.dataset
        features = {}
        for name in list(ds.coords) + list(ds.data_vars):
            if name == "candidate_id" or ds[name].dims != ("candidate",):
                continue
            features[str(name)] = np.asarray(ds[name].values)
        return features

    @property
    def numeric_features(self) -> list[str]:
        """Names of the features that can sort and filter (numbers, not booleans)."""
        return [
            name
            for name, values in self.features.items()
            if values.dtype.kind in "iuf" and values.dtype != bool
        ]

    def _key_values(self, key: str) -> np.ndarray:
        if key == ORDER_INDEX:
            return np.arange(self.n, dtype=float)
        if key in (ORDER_SCORE, "score") and self.scores is not None and key not in self.features:
            return self.scores
        if key == ORDER_UNCERTAIN:
            if self.scores is None:
                raise AstridInputError(
                    "'uncertain first' needs scores: TripletInspector(dataset, scores=...)"
                )
            return np.abs(self.scores - 0.5)
        if key in self.features:
            values = self.features[key]
            if values.dtype.kind not in "iuf" or values.dtype == bool:
                raise AstridInputError(
                    f"feature {key!r} is not numeric; numeric ones: {self.numeric_features}"
                )
            return values.astype(float)
        choices = (
            [ORDER_INDEX]
            + ([ORDER_SCORE, ORDER_UNCERTAIN] if self.scores is not None else [])
            + self.numeric_features
        )
        raise AstridInputError(f"{key!r}: cannot sort or filter by it; choose one of {choices}")

    # -- order and filter ------------------------------------------------------
    def sort_by(self, key: str = ORDER_INDEX, ascending: bool = True) -> np.ndarray:
        """Order the candidates by ``key``; candidates without a value go last.

        Parameters
        ----------
        key : str
            ``"dataset order"``, ``"score"``, ``"uncertain first"`` (scores
            closest to 0.5 first, always ascending) or a numeric feature.
        ascending : bool, optional
            Smallest first (default) or largest first.

        Returns
        -------
        numpy.ndarray of int
            The new :attr:`order`.
        """
        self._key_values(key)  # validates the key
        self._sort_key, self._ascending = key, bool(ascending) or key == ORDER_UNCERTAIN
        return self._reorder()

    def uncertain_first(self) -> np.ndarray:
        """Scores closest to 0.5 first: the candidates a label helps the classifier most."""
        return self.sort_by(ORDER_UNCERTAIN)

    def filter(
        self,
        key: str | None = None,
        min: float | None = None,
        max: float | None = None,
        unlabelled_only: bool | None = None,
    ) -> np.ndarray:
        """Keep the candidates with ``min <= key <= max`` (and, optionally, no label yet).

        Parameters
        ----------
        key : str, optional
            ``"score"`` or a numeric feature; None removes the range filter.
        min, max : float, optional
            Inclusive bounds; None leaves that side open.
        unlabelled_only : bool, optional
            Hide candidates that have a label (skip included); None keeps the
            current setting.

        Returns
        -------
        numpy.ndarray of int
            The new :attr:`order` (may be empty).
        """
        if key is not None:
            self._key_values(key)
        self._filter = (key, min, max)
        if unlabelled_only is not None:
            self._unlabelled_only = bool(unlabelled_only)
        return self._reorder()

    def show_only(self, candidates) -> np.ndarray:
        """Show just these candidates, in the given order (e.g. the batch :func:`astrid.braai.query` chose).

        Parameters
        ----------
        candidates : sequence of str or int
            ``candidate_id`` values or dataset positions.

        Returns
        -------
        numpy.ndarray of int
            The new :attr:`order`. Changing the sort or filter afterwards
            shows every candidate again.
        """
        positions = []
        for candidate in candidates:
            if isinstance(candidate, (int, np.integer)) and not isinstance(candidate, bool):
                if not 0 <= int(candidate) < self.n:
                    raise AstridInputError(
                        f"candidates: position {candidate} outside 0..{self.n - 1}"
                    )
                positions.append(int(candidate))
            elif str(candidate) in self._position_of:
                positions.append(self._position_of[str(candidate)])
            else:
                raise AstridInputError(
                    f"candidates: candidate_id {candidate!r} is not in the dataset"
                )
        if not positions:
            raise AstridInputError("candidates: none given")
        self.order = np.array(list(dict.fromkeys(positions)), dtype=int)
        self._cursor, self._page = 0, 0
        self._refresh()
        return self.order

    def reset_filter(self) -> np.ndarray:
        """Show every candidate again (the sort is kept)."""
        return self.filter(None, None, None, unlabelled_only=False)

    def _reorder(self) -> np.ndarray:
        current = self.current_index
        values = self._key_values(self._sort_key)
        finite = np.isfinite(values)
        sort_values = np.where(finite, values if self._ascending else -values, np.inf)
        order = np.lexsort((np.arange(self.n), sort_values))  # stable: ties keep dataset order
        key, low, high = self._filter
        keep = np.ones(self.n, dtype=bool)
        if key is not None:
            fvalues = self._key_values(key)
            with np.errstate(invalid="ignore"):
                keep &= np.isfinite(fvalues)
                if low is not None:
                    keep &= fvalues >= low
                if high is not None:
                    keep &= fvalues <= high
        if self._unlabelled_only:
            labelled = self.store.labels
            keep &= np.array([cid not in labelled for cid in self.ids])
        self.order = order[keep[order]]
        hits = np.flatnonzero(self.order == current) if current is not None else []
        self._cursor = int(hits[0]) if len(hits) else 0
        self._page = self._cursor // self._per_page
        self._refresh()
        return self.order

    # -- navigation -------------------------------------------------------------
    @property
    def _per_page(self) -> int:
        return self.grid_shape[0] * self.grid_shape[1]

    @property
    def current_index(self) -> int | None:
        """Dataset position of the candidate on show, or None when the filter hides all."""
        return int(self.order[self._cursor]) if len(self.order) else None

    @property
    def current_id(self) -> str | None:
        """``candidate_id`` of the candidate on show."""
        index = self.current_index
        return None if index is None else self.ids[index]

    def go_to(self, candidate: int | str) -> None:
        """Show a candidate, by ``candidate_id`` or by its place in :attr:`order`."""
        if isinstance(candidate, str):
            if candidate not in self._position_of:
                raise AstridInputError(f"candidate_id {candidate!r} is not in the dataset")
            hits = np.flatnonzero(self.order == self._position_of[candidate])
            if not len(hits):
                raise AstridInputError(f"candidate {candidate!r} is hidden by the current filter")
            self._cursor = int(hits[0])
        else:
            if not 0 <= int(candidate) < len(self.order):
                raise AstridInputError(
                    f"position {candidate}: the current order has {len(self.order)} candidates"
                )
            self._cursor = int(candidate)
        self._refresh()

    def next(self) -> None:
        """Show the next candidate of the order (stays at the last)."""
        if len(self.order):
            self._cursor = min(self._cursor + 1, len(self.order) - 1)
        self._refresh()

    def previous(self) -> None:
        """Show the previous candidate of the order (stays at the first)."""
        self._cursor = max(self._cursor - 1, 0)
        self._refresh()

    # -- labels ---------------------------------------------------------------
    @property
    def labels(self) -> dict[str, str]:
        """Current label of every labelled candidate: ``candidate_id -> label``."""
        return self.store.labels

    def label(self, label: str, candidate: str | None = None, advance: bool = True):
        """Label a candidate and save the label at once.

        Parameters
        ----------
        label : {"real", "bogus", "skip"}
            The label.
        candidate : str, optional
            ``candidate_id``; default the candidate on show.
        advance : bool, optional
            Move on to the next candidate afterwards (default).

        Returns
        -------
        LabelRecord
            What was written to the label file.
        """
        if candidate is None:
            candidate = self.current_id
            if candidate is None:
                raise AstridInputError("no candidate on show (the filter hides all)")
        elif str(candidate) not in self._position_of:
            raise AstridInputError(f"candidate_id {candidate!r} is not in the dataset")
        position = self._position_of[str(candidate)]
        score = None if self.scores is None else float(self.scores[position])
        record = self.store.add(str(candidate), label, score=score)
        if advance and candidate == self.current_id and self._cursor < len(self.order) - 1:
            self._cursor += 1
        self._refresh()
        return record

    def export_labels(self, path: str | os.PathLike, *, include_skipped: bool = False) -> Path:
        """Write the current labels to a ``.csv`` or ``.ecsv`` table for retraining.

        Columns: ``candidate_id``, ``label``, ``time``, ``score``. Skipped
        candidates are left out unless ``include_skipped``.
        """
        return self.store.export(path, include_skipped=include_skipped)

    def handle_key(self, key: str) -> bool:
        """Act on a keyboard shortcut (see :data:`KEYS`); True if it was one."""
        action = KEYS.get(key) or KEYS.get(key.lower() if len(key) == 1 else key)
        if action is None:
            return False
        if action in LABELS:
            if self.current_id is not None:
                self.label(action)
        elif action == "next":
            self.next()
        else:
            self.previous()
        return True

    # -- the widget --------------------------------------------------------
    def _build(self) -> None:
        w = self._widgets
        self._build_single_view()
        self._build_grid_view()
        header = self._build_header()
        self.status_html = w.HTML()
        self.widget = w.VBox([header, self.status_html, self.single_view, self.grid_view])
        self.widget.add_class("astrid-triplet-inspector")
        self._attach_keyboard()

    def _build_single_view(self) -> None:
        """The one-by-one view: the three stamps, the features and the label controls."""
        w = self._widgets
        layout = w.Layout
        width = int(self.dataset.sizes["x"]) * self.stamp_scale
        height = int(self.dataset.sizes["y"]) * self.stamp_scale
        # Fixed sizes everywhere: flex boxes would otherwise squeeze the stamps out of square.
        self.stamp_images = [
            w.Image(
                format="png",
                width=str(width),
                height=str(height),
                layout=layout(width=f"{width}px", height=f"{height}px", flex="none"),
            )
            for _ in CHANNELS
        ]
        stamps = w.HBox(
            [
                w.VBox(
                    [w.HTML(f"<b>{name}</b>"), image],
                    layout=layout(align_items="center", margin="0 6px 0 0", flex="none"),
                )
                for name, image in zip(CHANNELS, self.stamp_images)
            ],
            layout=layout(flex="none"),
        )
        self.features_html = w.HTML(layout=layout(min_width="220px", margin="0 0 0 6px"))
        self.label_buttons = {
            label: w.Button(
                description=label.capitalize(),
                tooltip=_BUTTON_HELP[label],
                button_style=_BUTTON_STYLE[label],
                layout=layout(width="90px"),
            )
            for label in LABELS
        }
        for label, button in self.label_buttons.items():
            button.on_click(lambda _button, label=label: self.label(label))
        self.previous_button = w.Button(
            description="Previous",
            icon="arrow-left",
            tooltip="Previous candidate (key p)",
            layout=layout(width="110px"),
        )
        self.next_button = w.Button(
            description="Next",
            icon="arrow-right",
            tooltip="Next candidate (key n)",
            layout=layout(width="110px"),
        )
        self.previous_button.on_click(lambda _b: self.previous())
        self.next_button.on_click(lambda _b: self.next())
        self.shortcut_box = w.Text(
            placeholder="keys: r b s, n p",
            continuous_update=True,
            layout=layout(width="130px"),
            tooltip="Click here, then type r (real), b (bogus), s (skip), n (next) or p (previous)",
        )
        self.shortcut_box.observe(self._on_shortcut_text, names="value")
        controls = w.HBox(
            [
                self.previous_button,
                self.next_button,
                *self.label_buttons.values(),
                self.shortcut_box,
            ],
            layout=layout(align_items="center", flex_flow="row wrap"),
        )
        self.single_view = w.VBox(
            [w.HBox([stamps, self.features_html], layout=layout(flex_flow="row wrap")), controls]
        )

    def _build_grid_view(self) -> None:
        """The grid view: a page of clickable thumbnails and the page buttons."""
        w = self._widgets
        layout = w.Layout
        self.grid_cells = []
        for _ in range(self._per_page):
            image = w.Image(format="png")
            button = w.Button(layout=layout(width="auto"))
            button.on_click(self._on_thumbnail_click)
            box = w.VBox(
                [image, button],
                layout=layout(
                    border="3px solid #d0d0d0",
                    padding="2px",
                    align_items="center",
                    margin="0 6px 6px 0",
                    flex="none",
                ),
            )
            self.grid_cells.append((box, image, button))
        # Thumbnails wrap to the width of the notebook; grid_shape sets how many make a page.
        self._grid = w.Box(
            [cell[0] for cell in self.grid_cells],
            layout=layout(display="flex", flex_flow="row wrap"),
        )
        self.page_previous_button = w.Button(description="Previous page", icon="arrow-left")
        self.page_next_button = w.Button(description="Next page", icon="arrow-right")
        self.page_previous_button.on_click(lambda _b: self._turn_page(-1))
        self.page_next_button.on_click(lambda _b: self._turn_page(+1))
        self.page_label = w.HTML()
        self.grid_view = w.VBox(
            [
                w.HBox(
                    [self.page_previous_button, self.page_next_button, self.page_label],
                    layout=layout(align_items="center"),
                ),
                self._grid,
            ],
            layout=layout(display="none"),
        )

    def _build_header(self):
        """The view toggle, the sort and the filter controls, wired to the refresh."""
        w = self._widgets
        layout = w.Layout
        sort_options = [ORDER_INDEX] + (
            [ORDER_UNCERTAIN, ORDER_SCORE] if self.scores is not None else []
        )
        sort_options += [name for name in self.numeric_features if name not in sort_options]
        self.sort_dropdown = w.Dropdown(
            options=sort_options,
            value=ORDER_INDEX,
            description="Sort",
            layout=layout(width="230px"),
        )
        self.descending_box = w.Checkbox(
            value=False, description="largest first", indent=False, layout=layout(width="120px")
        )
        filter_options = [("no filter", _NO_FILTER)] + [
            (name, name) for name in sort_options if name not in (ORDER_INDEX, ORDER_UNCERTAIN)
        ]
        self.filter_dropdown = w.Dropdown(
            options=filter_options,
            value=_NO_FILTER,
            description="Filter",
            layout=layout(width="230px"),
        )
        # Text rather than FloatText: an empty box means "open", which FloatText cannot hold.
        self.filter_min = w.Text(
            value="",
            placeholder="open",
            description="min",
            continuous_update=False,
            layout=layout(width="150px"),
        )
        self.filter_max = w.Text(
            value="",
            placeholder="open",
            description="max",
            continuous_update=False,
            layout=layout(width="150px"),
        )
        self.unlabelled_box = w.Checkbox(
            value=False, description="unlabelled only", indent=False, layout=layout(width="130px")
        )
        self.view_toggle = w.ToggleButtons(
            options=["One by one", "Grid"], value="One by one", style={"button_width": "100px"}
        )
        for control in (
            self.sort_dropdown,
            self.descending_box,
            self.filter_dropdown,
            self.filter_min,
            self.filter_max,
            self.unlabelled_box,
        ):
            control.observe(self._on_controls, names="value")
        self.view_toggle.observe(self._on_view, names="value")
        header = w.VBox(
            [
                w.HBox(
                    [self.view_toggle, self.sort_dropdown, self.descending_box],
                    layout=layout(align_items="center"),
                ),
                w.HBox(
                    [self.filter_dropdown, self.filter_min, self.filter_max, self.unlabelled_box],
                    layout=layout(align_items="center"),
                ),
            ]
        )
        return header

    def _attach_keyboard(self) -> None:
        """Arrow keys and letters on the whole widget where ipyevents is installed."""
        try:
            from ipyevents import Event
        except ImportError:
            self.key_events = None
            return
        self.key_events = Event(
            source=self.widget, watched_events=["keydown"], prevent_default_action=False
        )
        self.key_events.on_dom_event(self.on_key_event)

    def on_key_event(self, event: dict) -> None:
        """The ipyevents callback: a plain ``keydown`` goes to :meth:`handle_key`.

        Parameters
        ----------
        event : dict
            The event as ipyevents reports it: ``type``, ``key`` and the
            modifier flags ``ctrlKey``, ``altKey``, ``metaKey`` (a key with a
            modifier is left to the browser).
        """
        if event.get("type") == "keydown" and not (
            event.get("ctrlKey") or event.get("altKey") or event.get("metaKey")
        ):
            self.handle_key(str(event.get("key", "")))

    def _on_shortcut_text(self, change) -> None:
        text = change["new"]
        if not text:
            return
        for char in text:
            self.handle_key(char)
        self.shortcut_box.value = ""

    def _on_controls(self, _change=None) -> None:
        if self._syncing:
            return
        key = self.sort_dropdown.value
        self._sort_key, self._ascending = (
            key,
            (not self.descending_box.value) or key == ORDER_UNCERTAIN,
        )
        bounds = []
        for box in (self.filter_min, self.filter_max):
            text = box.value.strip()
            try:
                bounds.append(float(text) if text else None)
            except ValueError:
                self.status_html.value = (
                    f"<span style='color:#c62828'>{html.escape(text)!s} is not a number</span>"
                )
                return
        key = None if self.filter_dropdown.value == _NO_FILTER else self.filter_dropdown.value
        self._filter = (key, *bounds)
        self._unlabelled_only = self.unlabelled_box.value
        self._reorder()

    def _on_view(self, change) -> None:
        self.show_grid() if change["new"] == "Grid" else self.show_single()

    def _on_thumbnail_click(self, button) -> None:
        cid = getattr(button, "_astrid_candidate", None)
        if cid is not None:
            self.go_to(cid)
            self.show_single()

    def _turn_page(self, step: int) -> None:
        n_pages = max(1, -(-len(self.order) // self._per_page))
        self._page = min(max(self._page + step, 0), n_pages - 1)
        self._refresh()

    def show_single(self) -> None:
        """Switch to the one-by-one view."""
        self._mode = "single"
        self._refresh()

    def show_grid(self) -> None:
        """Switch to the grid of thumbnails (the page of the candidate on show)."""
        self._mode = "grid"
        self._page = self._cursor // self._per_page
        self._refresh()

    def _stamp(self, index: int) -> np.ndarray:
        return np.asarray(self.dataset["triplets"].isel(candidate=index).values)

    def _refresh(self) -> None:
        """Bring every widget in line with the state (the state is the truth)."""
        if not hasattr(self, "widget"):
            return
        self._syncing = True
        try:
            self.sort_dropdown.value = (
                self._sort_key if self._sort_key in self.sort_dropdown.options else ORDER_INDEX
            )
            self.descending_box.value = not self._ascending
            key, low, high = self._filter
            self.filter_dropdown.value = (
                key if key in dict(self.filter_dropdown.options).values() else _NO_FILTER
            )
            self.filter_min.value = "" if low is None else f"{low:g}"
            self.filter_max.value = "" if high is None else f"{high:g}"
            self.unlabelled_box.value = self._unlabelled_only
            self.view_toggle.value = "Grid" if self._mode == "grid" else "One by one"
        finally:
            self._syncing = False
        labels = self.store.labels
        n_real = sum(v == "real" for v in labels.values())
        n_bogus = sum(v == "bogus" for v in labels.values())
        index = self.current_index
        where = (
            f"candidate {self._cursor + 1} of {len(self.order)} shown"
            + (f" ({self.n} in the dataset)" if len(self.order) != self.n else "")
            if index is not None
            else "no candidate matches the filter"
        )
        self.status_html.value = (
            f"<span>{html.escape(where)} &middot; {n_real} real, {n_bogus} bogus labelled &middot; "
            f"labels saved to <code title='{html.escape(str(self.labels_path.resolve()), quote=True)}'>"
            f"{html.escape(self.labels_path.name)}</code></span>"
        )
        self.single_view.layout.display = "none" if self._mode == "grid" else None
        self.grid_view.layout.display = None if self._mode == "grid" else "none"
        for button in (*self.label_buttons.values(), self.previous_button, self.next_button):
            button.disabled = index is None
        if self._mode == "grid":
            self._refresh_grid(labels)
        else:
            self._refresh_single(index, labels)

    def _refresh_single(self, index: int | None, labels: dict) -> None:
        if index is None:
            for image in self.stamp_images:
                image.value = b""
            self.features_html.value = ""
            return
        for image, png in zip(
            self.stamp_images,
            triplet_pngs(
                self._stamp(index),
                CHANNELS,
                stretch=self.difference_stretch,
                scale=self.stamp_scale,
            ),
        ):
            image.value = png
        cid = self.ids[index]
        label = labels.get(cid)
        rows = [("candidate_id", cid)]
        if self.scores is not None:
            rows.append(("score", _format_value(self.scores[index])))
        rows.append(("your label", label or "none"))
        for name, values in self.features.items():
            units = self.dataset[name].attrs.get("units")
            rows.append((f"{name} [{units}]" if units else name, _format_value(values[index])))
        body = "".join(
            f"<tr><th style='text-align:left;padding-right:10px'>{html.escape(str(k))}</th>"
            f"<td style='text-align:left'>{html.escape(str(v))}</td></tr>"
            for k, v in rows
        )
        colour = _LABEL_COLOURS.get(label, _LABEL_COLOURS[None])
        self.features_html.value = (
            f"<div style='border-left:6px solid {colour};padding-left:8px'>"
            f"<table class='astrid-candidate-table'>{body}</table></div>"
        )

    def _refresh_grid(self, labels: dict) -> None:
        n_pages = max(1, -(-len(self.order) // self._per_page))
        self._page = min(self._page, n_pages - 1)
        start = self._page * self._per_page
        shown = self.order[start : start + self._per_page]
        self.page_label.value = f"page {self._page + 1} of {n_pages}"
        for slot, (box, image, button) in enumerate(self.grid_cells):
            if slot >= len(shown):
                box.layout.display = "none"
                button._astrid_candidate = None
                continue
            index = int(shown[slot])
            cid = self.ids[index]
            label = labels.get(cid)
            image.value = triplet_strip_png(
                self._stamp(index),
                CHANNELS,
                stretch=self.difference_stretch,
                scale=self.thumbnail_scale,
            )
            score = "" if self.scores is None else f" · {_format_value(self.scores[index])}"
            button.description = f"{cid}{score}"
            button.tooltip = f"Open candidate {cid}" + (f" (labelled {label})" if label else "")
            button._astrid_candidate = cid
            box.layout.display = None
            box.layout.border = f"3px solid {_LABEL_COLOURS.get(label, _LABEL_COLOURS[None])}"

    # -- display ------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    def _ipython_display_(self):
        from IPython.display import display

        display(self.widget)

    def __repr__(self) -> str:
        return (
            f"<TripletInspector {self.n} candidates, {len(self.labels)} labelled, "
            f"labels in {str(self.labels_path)!r}>"
        )
