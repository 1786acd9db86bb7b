"""An expected-content model of a disk, in units of 1 MiB, for read-back checks.

A `DiskContent` is what a guest would read from a volume: a byte value per unit (0 where nothing
was written anywhere in the chain). Overlaying a layer's writes on its parent's content gives the
content of the layer, which is exactly what a merge must preserve.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from support.qemu import Segment

MiB = 1024 * 1024
GiB = 1024 * MiB


@dataclass(frozen=True)
class Write:
    """A run of `units` MiB of value `byte` starting at MiB `start`."""

    start: int
    units: int
    byte: int

    def segment(self, unit: int = MiB) -> Segment:
        return Segment(self.start * unit, self.units * unit, self.byte)


class DiskContent:
    """Per-unit byte values of a disk of `size` bytes (a multiple of `unit`)."""

    def __init__(self, size: int, unit: int = MiB, values: list[int] | None = None) -> None:
        if size % unit:
            raise ValueError("size must be a multiple of the unit")
        self.size = size
        self.unit = unit
        self.values = list(values) if values is not None else [0] * (size // unit)

    def overlay(self, writes: Iterable[Write]) -> DiskContent:
        """The content after applying `writes` on top of this content."""
        values = list(self.values)
        for w in writes:
            if w.start < 0 or w.start + w.units > len(values):
                raise ValueError(f"write {w} outside a disk of {len(values)} units")
            values[w.start : w.start + w.units] = [w.byte] * w.units
        return DiskContent(self.size, self.unit, values)

    def segments(self) -> list[Segment]:
        """Runs covering the whole disk, zero runs included, so every byte gets checked."""
        runs: list[Segment] = []
        start = 0
        for i in range(1, len(self.values) + 1):
            if i == len(self.values) or self.values[i] != self.values[start]:
                runs.append(Segment(start * self.unit, (i - start) * self.unit, self.values[start]))
                start = i
        return runs

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DiskContent):
            return NotImplemented
        return (self.size, self.unit, self.values) == (other.size, other.unit, other.values)

    def __hash__(self) -> int:
        return hash((self.size, self.unit, tuple(self.values)))

    def __repr__(self) -> str:
        return f"DiskContent({self.size}, runs={self.segments()})"
