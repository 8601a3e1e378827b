"""Checks of JSON values from untrusted files and requests, shared by every converter.

JSON integers have no size limit and Python keeps them exact: ``math.isfinite(10**400)`` raises
``OverflowError``. A number that cannot become a float is not a usable coordinate, score or id here.
"""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_int(value: Any) -> bool:
    """An integer, not a bool (``True`` is an ``int`` in Python, never an id or a size in JSON)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A real number, not a bool, that is finite as a float (huge integers are not: they overflow)."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def is_id(value: Any) -> bool:
    """A Label Studio / COCO id: an integer or a string (never a list, object, bool or float)."""
    return is_int(value) or isinstance(value, str)
