"""Visiting a long list a slice at a time, continuing where the last collection stopped: how the
detail groups (members, retention, preheat, artifacts) spread one call per project over many
collections instead of asking for all 10,000 at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any


def rotate(items: list, cursor: int, budget: int) -> tuple[list, int]:
    """``budget`` items from ``cursor`` on, wrapping around; and the next cursor."""
    if not items:
        return [], 0
    cursor %= len(items)
    chosen = (items[cursor:] + items[:cursor])[:budget]
    return chosen, (cursor + len(chosen)) % len(items)


class Rotation:
    """Where a group's walk over its items stands between collections."""

    def __init__(self) -> None:
        self.cursor = 0

    def take(self, items: list, count: int) -> list:
        """The next ``count`` items (each costs the same)."""
        chosen, self.cursor = rotate(items, self.cursor, count)
        return chosen

    def walk(self, items: list, more: Callable[[], bool]) -> Iterator[Any]:
        """The next items, one round at most, while ``more()`` (asked before each: items cost differently)."""
        if not items:
            return
        self.cursor %= len(items)
        for _ in range(len(items)):
            if not more():
                return
            item = items[self.cursor]
            self.cursor = (self.cursor + 1) % len(items)
            yield item
