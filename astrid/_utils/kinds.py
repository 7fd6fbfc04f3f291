"""The one rule for a list of truth kinds given as an argument (``real_kinds``)."""

from __future__ import annotations

from ..errors import AstridInputError


def kinds_tuple(value, argument: str = "real_kinds") -> tuple[str, ...]:
    """``value`` as a tuple of kind names: one name, or a sequence of non-empty names.

    Refused with an error naming ``argument`` when empty or not strings (a bare string is one
    kind, not its letters).
    """
    kinds = (value,) if isinstance(value, str) else tuple(value)
    if not kinds or not all(isinstance(k, str) and k for k in kinds):
        raise AstridInputError(
            f"{argument}: give one or more truth kinds, e.g. ('supernova', 'variable'); "
            f"got {value!r}"
        )
    return kinds
