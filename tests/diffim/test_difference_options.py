"""DifferenceOptions (the stage options of astrid.difference) and as_image (one way in for images)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import astrid
from astrid import DifferenceOptions, Image, as_image
from astrid.errors import AstridInputError


def test_from_mapping_reads_the_flat_names():
    options = DifferenceOptions.from_mapping(
        {
            "box_size": 32,
            "psf_degree": 0,
            "science_zp": 25.0,
            "align_method": "exact",
            "tile_size": 256,
        }
    )
    assert options.background.box_size == 32 and options.background.filter_size == 3
    assert options.psf.degree == 0 and options.flux_ratio.science_zp == 25.0
    assert options.align.method == "exact" and options.subtract.tile_size == 256
    assert DifferenceOptions.from_mapping(options.to_mapping()) == options
    flat = dataclasses.asdict(options)  # the description of a run, e.g. for a fingerprint
    assert flat["background"]["box_size"] == 32


def test_unknown_names_suggest_the_closest():
    with pytest.raises(
        AstridInputError, match=r"unknown option\(s\) \['box_sise'\].*did you mean 'box_size'"
    ):
        DifferenceOptions.from_mapping({"box_sise": 32})


@pytest.mark.parametrize(
    "flat, message",
    [
        ({"box_size": 2}, "box_size"),
        ({"psf_degree": 3}, "psf_degree"),
        ({"noise_correlation": "x"}, "noise_correlation"),
        ({"kernel": {"dtype": "f4"}}, "kernel"),
    ],
)
def test_bad_values_are_refused(flat, message):
    with pytest.raises(AstridInputError, match=message):
        DifferenceOptions.from_mapping(flat)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DifferenceOptions().background.box_size = 8


def test_difference_refuses_bad_options_before_reading_images():
    # Not even the (missing) files are opened: the options are checked first.
    with pytest.raises(AstridInputError, match="options"):
        astrid.difference("missing_ref.fits", "missing_sci.fits", options={"box_size": 32})
    with pytest.raises(AstridInputError, match="box_size"):
        astrid.difference(
            "missing_ref.fits",
            "missing_sci.fits",
            options=DifferenceOptions.from_mapping({"box_size": 32}),
            box_size=1,
        )


def test_as_image_accepts_images_pairs_and_arrays():
    data = np.arange(12.0).reshape(3, 4)
    image = Image(data)
    assert as_image(image) is image
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = True
    paired = as_image((data, mask), "science")
    assert paired.mask[0, 0] and not paired.mask[1, 1]
    masked = as_image(np.ma.MaskedArray(data, mask=mask))
    assert masked.mask[0, 0]
    with pytest.raises(AstridInputError, match="science: must be a 2-D array"):
        as_image(np.zeros(4), "science")
    with pytest.raises(AstridInputError, match="reference: must be an astrid.Image or a path"):
        as_image(data, "reference", arrays=False)


def test_swapped_positional_images_fail_loudly():
    data = np.zeros((8, 8))
    with pytest.raises(TypeError):
        astrid.flux_ratio(data, data)  # keyword-only: reference=..., science=...
    with pytest.raises(TypeError):
        astrid.align(Image(data), Image(data))
