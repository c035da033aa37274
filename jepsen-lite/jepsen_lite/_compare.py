"""Helpers shared by the checkers that compare the final states of several nodes.

Owns the choice of a reference view (the majority) and a stable order for mixed-type ids, so
that reports are deterministic. No checker logic lives here.
"""

from collections import Counter
from collections.abc import Hashable, Iterable, Mapping
from typing import Any, TypeVar

View = TypeVar("View", bound=Hashable)


def sort_key(value: Any) -> tuple[str, Any]:
    """Orders ids of mixed types (ints, strings) without comparing across types."""
    return (type(value).__name__, value)


def sorted_ids(values: Iterable[Any]) -> list[Any]:
    """A deterministic list of ids for reports."""
    return sorted(values, key=sort_key)


def majority(views: Mapping[str, View]) -> View:
    """The view held by the most nodes; a tie goes to the view of the first node by name."""
    if not views:
        raise ValueError("majority of no views")
    counts = Counter(views.values())
    most = max(counts.values())
    for node in sorted(views):
        if counts[views[node]] == most:
            return views[node]
    raise AssertionError("unreachable: some node holds the most common view")
