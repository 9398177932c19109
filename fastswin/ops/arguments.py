"""Arguments the ops share: sizes given as an int or an (h, w) pair ((t, h, w) for video
maps), and the window and shift checks."""
import operator
from collections.abc import Iterable
from typing import Sequence, Tuple, Union

IntPair = Union[int, Sequence[int]]


def as_pair(value: IntPair, name: str = "size") -> Tuple[int, int]:
    """(value, value) for an integer, the two integers of a pair; ValueError for anything
    else (a float, a bool, three numbers). Any integer type counts (numpy's too)."""
    return as_sizes(value, 2, name)


def as_sizes(value: IntPair, dims: int, name: str = "size") -> Tuple[int, ...]:
    """as_pair for `dims` spatial dims: an integer repeated, or exactly dims integers."""
    try:
        items = tuple(value) if isinstance(value, Iterable) else (value,) * dims
        sizes = tuple(operator.index(v) for v in items if not isinstance(v, bool))
    except TypeError:
        items, sizes = (), ()
    if len(sizes) != dims or len(sizes) != len(items):  # a bool is not a size
        kind = "a pair of" if dims == 2 else f"{dims}"
        raise ValueError(f"fastswin: {name} must be an int or {kind} ints, got {value!r}")
    return sizes


def check_window(window_size: Tuple[int, ...], shift_size: Tuple[int, ...], op: str) -> None:
    """ValueError unless the window is positive and the shift non-negative."""
    if min(window_size) < 1:
        raise ValueError(f"fastswin.{op}: window_size must be positive, got {window_size}")
    if min(shift_size) < 0:
        raise ValueError(f"fastswin.{op}: shift_size must be >= 0, got {shift_size}")
