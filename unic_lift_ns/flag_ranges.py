"""Ranges of numeric flags, checked before anything is written or trained.

A config dataclass names the ranges of its numeric fields (its own and those it inherits from nerfstudio) in a
``flag_ranges`` class attribute; a nested config's fields are named with dots (``"camera_optimizer.rot_l2_penalty"``).
:func:`check_flag_ranges` refuses the first value outside its range, or a NaN or infinity anywhere, with one
:class:`~unic_lift_ns.errors.InputError` naming the flag. ``None`` (an unset optional) is always accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from typing import Any, Dict, Iterator, List, Optional, Tuple

from unic_lift_ns.errors import InputError


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; an open end excludes its bound."""

    low: Optional[float] = None
    """Smallest allowed value; None = unbounded."""
    high: Optional[float] = None
    """Largest allowed value; None = unbounded."""
    open_low: bool = False
    """``low`` itself is not allowed."""
    open_high: bool = False
    """``high`` itself is not allowed."""
    why: str = ""
    """Why, appended to the error message."""

    def __contains__(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.open_low else '['}{self.low}, {self.high}{')' if self.open_high else ']'}"
        if self.low is not None:
            return f"greater than {self.low}" if self.open_low else f"at least {self.low}"
        if self.high is not None:
            return f"less than {self.high}" if self.open_high else f"at most {self.high}"
        return "a finite number"


ANY = Range()
"""Any finite number (seeds)."""
AT_LEAST_0 = Range(0)
"""Counts, step numbers, weights."""
AT_LEAST_1 = Range(1)
"""Sizes and intervals that must be positive integers."""
POSITIVE = Range(0, open_low=True)
"""Scales, thresholds, temperatures."""
UNIT = Range(0, 1)
"""Fractions and probabilities."""


def flag_name(path: str) -> str:
    """``"camera_optimizer.rot_l2_penalty"`` -> ``"camera-optimizer.rot-l2-penalty"`` (tyro's spelling)."""
    return path.replace("_", "-")


def _numbers(value: Any) -> List[float]:
    """The numbers a field holds: itself, or the items of a tuple or list; booleans are not numbers."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    return [v for v in items if isinstance(v, (int, float)) and not isinstance(v, bool)]


def numeric_fields(config: Any) -> Iterator[Tuple[str, Any]]:
    """(dotted path, value) of every field of ``config`` holding numbers, descending into nested config
    dataclasses that ``flag_ranges`` names (e.g. ``camera_optimizer``)."""
    ranges = ranges_of(config)
    for f in fields(config):
        value = getattr(config, f.name)
        if is_dataclass(value) and not isinstance(value, type):
            if any(key.startswith(f"{f.name}.") for key in ranges):
                yield from ((f"{f.name}.{sub}", v) for sub, v in numeric_fields(value))
        elif _numbers(value):
            yield f.name, value


def ranges_of(config: Any) -> Dict[str, Range]:
    """The ``flag_ranges`` of ``config``'s class and its bases, the subclass's entries winning."""
    ranges: Dict[str, Range] = {}
    for cls in reversed(type(config).__mro__):
        ranges.update(vars(cls).get("flag_ranges", {}))
    return ranges


def check_flag_ranges(config: Any, prefix: str) -> None:
    """Raise :class:`InputError` for the first number of ``config`` outside its range or not finite.

    Args:
        config: a config dataclass with ``flag_ranges``.
        prefix: the flag prefix of its fields, e.g. ``"--pipeline.model."``.
    """
    ranges = ranges_of(config)
    for path, value in numeric_fields(config):
        flag = prefix + flag_name(path)
        allowed = ranges.get(path, ANY)
        for number in _numbers(value):
            if not math.isfinite(number):
                raise InputError(f"{flag} must be a finite number, got {number}")
            if number not in allowed:
                why = f": {allowed.why}" if allowed.why else ""
                raise InputError(f"{flag} must be {allowed}, got {value}{why}")
