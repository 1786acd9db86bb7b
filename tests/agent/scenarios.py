"""Chain layouts shared by the agent contract tests.

A 64 MiB disk with four layers. Layer i writes a 2 MiB marker of its own, overwrites the
second MiB of the previous layer's marker, overwrites a 4 MiB range every layer writes, and,
when "big", 20 MiB of bulk data. Which layers are big decides the actual sizes and therefore
the merge direction the agent must pick (COMMIT when actual_size(top) < actual_size(base)).
"""

from __future__ import annotations

from support.content import MiB, Write

DISK_SIZE = 64 * MiB


def layer_writes(index: int, *, big: bool) -> list[Write]:
    """The writes of layer `index` (0 = base)."""
    writes = [Write(8 * index, 2, 0x10 + index)]
    if index > 0:
        writes.append(Write(8 * (index - 1) + 1, 1, 0x30 + index))
    writes.append(Write(40, 4, 0x20 + index))
    if big:
        writes.append(Write(44, 20, 0x40 + index))
    return writes


def chain_writes(big_layers: set[int], depth: int = 4) -> list[list[Write]]:
    """Writes for a chain of `depth` layers where the layers in `big_layers` are big."""
    return [layer_writes(i, big=i in big_layers) for i in range(depth)]
