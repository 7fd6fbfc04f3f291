"""Normalised mission and filter names, so that equal bands compare equal.

Archives spell the same band many ways (Swift UVOT's ``UVW1`` is ``uvw1``,
``UV W1`` or ``uw1`` in file names); pairing must treat those as one filter and
must never treat ``UVW1`` and ``UVM2`` as one.
"""

from __future__ import annotations

import re

__all__ = ["normalise_filter", "normalise_mission", "normalise_instrument", "SWIFT_UVOT_FILTERS"]

#: The imaging filters of Swift UVOT, in their normalised spelling.
SWIFT_UVOT_FILTERS = ("UVW2", "UVM2", "UVW1", "U", "B", "V", "WHITE")

# Every spelling seen in UVOT headers, MAST's ``filters`` column and UVOT
# file names (sw<obsid>uw1_sk.img.gz), keyed after removing case and spacing.
_UVOT_ALIASES = {
    "U": "U",
    "UU": "U",
    "UUU": "U",
    "B": "B",
    "UBB": "B",
    "BB": "B",
    "V": "V",
    "UVV": "V",
    "VV": "V",
    "UVW1": "UVW1",
    "UW1": "UVW1",
    "W1": "UVW1",
    "UVM2": "UVM2",
    "UM2": "UVM2",
    "M2": "UVM2",
    "UVW2": "UVW2",
    "UW2": "UVW2",
    "W2": "UVW2",
    "WHITE": "WHITE",
    "WH": "WHITE",
    "UWH": "WHITE",
    "WHITELIGHT": "WHITE",
}

# Parts of a multi-valued filter string that name no band (HST's CLEAR1L, ...).
_EMPTY_PARTS = re.compile(r"^(CLEAR\w*|OPEN\w*|NONE|N/?A|BLANK|DETECTION)$")

_MISSION_ALIASES = {
    "PANSTARRS": "PS1",
    "PAN-STARRS": "PS1",
    "PAN-STARRS1": "PS1",
    "PANSTARRS1": "PS1",
    "SWIFTUVOT": "SWIFT",
}


def _key(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(text)).upper()


def normalise_mission(name) -> str | None:
    """Upper-case mission name (``"swift"`` → ``"SWIFT"``, ``"Pan-STARRS"`` → ``"PS1"``).

    Parameters
    ----------
    name : str or None
        Mission as an archive or header spells it.

    Returns
    -------
    str or None
        The name upper-cased, Pan-STARRS spellings as ``"PS1"`` and Swift
        UVOT as ``"SWIFT"``; None when ``name`` is None, empty or ``"--"``.
    """
    if name is None:
        return None
    text = str(name).strip()
    if not text or text == "--":
        return None
    upper = text.upper()
    return _MISSION_ALIASES.get(upper, _MISSION_ALIASES.get(_key(upper), upper))


def normalise_instrument(name) -> str | None:
    """Upper-case instrument name with surrounding space removed.

    Parameters
    ----------
    name : str or None
        Instrument as an archive or header spells it.

    Returns
    -------
    str or None
        The name upper-cased, stripped, with each run of inner white space
        made one space; None when ``name`` is None, empty or ``"--"``.
    """
    if name is None:
        return None
    text = str(name).strip()
    if not text or text == "--":
        return None
    return re.sub(r"\s+", " ", text.upper())


def _is_uvot(mission: str | None, instrument: str | None) -> bool:
    return (mission or "").upper().startswith("SWIFT") or "UVOT" in (instrument or "").upper()


def normalise_filter(name, mission: str | None = None, instrument: str | None = None) -> str | None:
    """Normalised filter name, insensitive to case and spacing.

    Parameters
    ----------
    name : str or None
        Filter as an archive or header spells it. Several parts separated by
        ``;`` (MAST) or ``,`` are sorted, and parts that name no band
        (``CLEAR``, ``OPEN``, ``NONE``) are dropped.
    mission, instrument : str, optional
        Where the filter belongs. For Swift UVOT the aliases ``uw1``, ``W1``,
        ``UV W1`` → ``UVW1`` (and likewise ``UVM2``, ``UVW2``, ``WHITE``,
        ``U``/``B``/``V``) apply; they are not applied to other missions
        (WISE has a ``W1`` band of its own). With neither given, only the
        unambiguous UVOT spellings (``uvw1``, ``UV M2``, ...) are recognised.

    Returns
    -------
    str or None
        Upper-case filter name, e.g. ``"UVW1"`` or ``"F606W"``; None when empty.

    Examples
    --------
    >>> normalise_filter(" uv w1 ", mission="SWIFT")
    'UVW1'
    >>> normalise_filter("F606W;CLEAR1L", mission="HST")
    'F606W'
    """
    if name is None:
        return None
    text = str(name).strip()
    if not text or text == "--":
        return None
    uvot = _is_uvot(mission, instrument)
    unknown_mission = mission is None and instrument is None
    parts = []
    for part in re.split(r"[;,]", text):
        key = _key(part)
        if not key or _EMPTY_PARTS.match(key):
            continue
        if uvot:
            key = _UVOT_ALIASES.get(key, key)
        elif unknown_mission and key.startswith("UV") and key in _UVOT_ALIASES:
            key = _UVOT_ALIASES[key]
        parts.append(key)
    if not parts:
        return None
    return ";".join(sorted(set(parts)))
