"""Directory-tree snapshots, to prove that a refused request changed nothing on disk."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    """What is compared per path: kind, size, mtime, inode and (for symlinks) the target."""

    kind: str
    size: int
    mtime_ns: int
    inode: int
    target: str = ""


def tree_snapshot(*roots: Path) -> dict[str, Entry]:
    """lstat every path under each root (symlinks are recorded, never followed)."""
    snap: dict[str, Entry] = {}
    for root in roots:
        if not os.path.lexists(root):
            snap[str(root)] = Entry("absent", 0, 0, 0)
            continue
        snap[str(root)] = _entry(root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            for name in [*dirnames, *filenames]:
                path = Path(dirpath) / name
                snap[str(path)] = _entry(path)
    return snap


def _entry(path: Path) -> Entry:
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        return Entry("symlink", st.st_size, st.st_mtime_ns, st.st_ino, os.readlink(path))
    kind = "dir" if stat.S_ISDIR(st.st_mode) else "file"
    return Entry(kind, st.st_size, st.st_mtime_ns, st.st_ino)


def diff_snapshots(before: dict[str, Entry], after: dict[str, Entry]) -> list[str]:
    """Human-readable differences; empty when the trees are identical."""
    changes: list[str] = []
    for path in sorted(before.keys() | after.keys()):
        old, new = before.get(path), after.get(path)
        if old == new:
            continue
        if old is None:
            changes.append(f"created {path}: {new}")
        elif new is None:
            changes.append(f"removed {path}")
        else:
            changes.append(f"changed {path}: {old} -> {new}")
    return changes


def assert_unchanged(before: dict[str, Entry], *roots: Path) -> None:
    """Assert the trees under `roots` equal the `before` snapshot."""
    changes = diff_snapshots(before, tree_snapshot(*roots))
    assert not changes, "the request changed files on disk:\n" + "\n".join(changes)
