"""Small typed wrappers around qemu-img and qemu-io for tests and benchmarks.

Data checks use `qemu-io -r -U -c "read -P <byte> <off> <len>"`: a mismatch makes qemu-io print
"Pattern verification failed" and exit with rc=1 (QEMU 7.2), and both are checked. A qcow2
whose backing name is relative resolves it against the image's own directory, so the agent's
bare-id backing names work from any working directory.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QEMU_IMG = "qemu-img"
QEMU_IO = "qemu-io"
DEFAULT_TIMEOUT = 300.0
PATTERN_FAILED = "Pattern verification failed"


class QemuCommandError(AssertionError):
    """A qemu-img / qemu-io command failed; carries the command, exit code and output tails."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"{' '.join(argv)} -> rc={returncode}\n"
            f"stdout: {stdout[-2000:]}\nstderr: {stderr[-2000:]}"
        )


@dataclass(frozen=True)
class Segment:
    """A run of identical bytes: `length` bytes of value `byte` starting at `offset`."""

    offset: int
    length: int
    byte: int


def run(
    argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """Run a command from an argv list (no shell); raise QemuCommandError on a non-zero rc."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise QemuCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    return proc


def create(
    path: Path,
    fmt: str,
    size: int | None = None,
    *,
    backing: str | None = None,
    backing_fmt: str = "qcow2",
    unsafe: bool = False,
) -> None:
    """`qemu-img create`; with `backing` a qcow2 overlay (`-F backing_fmt`, `-u` when unsafe)."""
    argv = [QEMU_IMG, "create", "-q", "-f", fmt]
    if fmt == "qcow2":
        argv += ["-o", "compat=1.1"]
    if backing is not None:
        argv += ["-b", backing, "-F", backing_fmt]
        if unsafe:
            argv.append("-u")
    argv.append(str(path))
    if size is not None:
        argv.append(str(size))
    run(argv)


def write_pattern(path: Path, fmt: str, byte: int, offset: int, length: int) -> None:
    """Write `length` bytes of value `byte` at `offset` into the image (through its format)."""
    write_patterns(path, fmt, [Segment(offset, length, byte)])


def write_patterns(path: Path, fmt: str, segments: Iterable[Segment]) -> None:
    """Write several runs in one qemu-io process."""
    argv = [QEMU_IO, "-f", fmt]
    count = 0
    for seg in segments:
        argv += ["-c", f"write -P {seg.byte:#04x} {seg.offset} {seg.length}"]
        count += 1
    if count == 0:
        return
    argv.append(str(path))
    proc = run(argv)
    if proc.stdout.count("wrote ") != count:
        raise QemuCommandError(argv, proc.returncode, proc.stdout, proc.stderr)


def assert_pattern(path: Path, fmt: str, byte: int, offset: int, length: int) -> None:
    """Assert that the image reads `length` bytes of `byte` at `offset`."""
    assert_segments(path, fmt, [Segment(offset, length, byte)])


def assert_segments(path: Path, fmt: str, segments: Iterable[Segment]) -> None:
    """Assert every run reads back as expected; one read-only qemu-io process for all runs."""
    segs = list(segments)
    if not segs:
        return
    argv = [QEMU_IO, "-r", "-U", "-f", fmt]
    for seg in segs:
        argv += ["-c", f"read -P {seg.byte:#04x} {seg.offset} {seg.length}"]
    argv.append(str(path))
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT, check=False
    )
    out = proc.stdout + proc.stderr
    if proc.returncode != 0 or PATTERN_FAILED in out or proc.stdout.count("read ") != len(segs):
        failed = [line for line in out.splitlines() if PATTERN_FAILED in line]
        raise AssertionError(
            f"content of {path} differs from expectation (rc={proc.returncode}): "
            f"{failed[:10] or out[-2000:]}\nexpected: {segs}"
        )


def info(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """`qemu-img info -U --output=json` of one image."""
    argv = [QEMU_IMG, "info", "-U", "--output=json"]
    if fmt is not None:
        argv += ["-f", fmt]
    result: dict[str, Any] = json.loads(run([*argv, str(path)]).stdout)
    return result


def backing_chain(path: Path) -> list[dict[str, Any]]:
    """`qemu-img info --backing-chain -U --output=json`: one entry per image, top first."""
    out = run([QEMU_IMG, "info", "--backing-chain", "-U", "--output=json", str(path)]).stdout
    chain: list[dict[str, Any]] = json.loads(out)
    return chain


def check_image(path: Path, fmt: str | None = None) -> dict[str, Any]:
    """Assert `qemu-img check` finds the image clean; returns the JSON report ({} for raw)."""
    fmt = fmt or str(info(path)["format"])
    if fmt == "raw":
        return {}
    argv = [QEMU_IMG, "check", "-U", "-f", fmt, "--output=json", str(path)]
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=DEFAULT_TIMEOUT, check=False
    )
    if proc.returncode != 0:
        raise QemuCommandError(argv, proc.returncode, proc.stdout, proc.stderr)
    report: dict[str, Any] = json.loads(proc.stdout)
    for key in ("corruptions", "leaks", "check-errors", "corruptions-fixed", "leaks-fixed"):
        assert not report.get(key), f"qemu-img check of {path}: {key}={report.get(key)}: {report}"
    return report


def commit(top: Path, base: Path, *, cache: str = "none") -> None:
    """VDSM-style cold merge: `qemu-img commit -p -t CACHE -b base -f qcow2 top`."""
    run([QEMU_IMG, "commit", "-p", "-t", cache, "-b", str(base), "-f", "qcow2", str(top)])


def rebase(
    path: Path,
    backing: str,
    *,
    backing_fmt: str = "qcow2",
    cache: str = "none",
    unsafe: bool = False,
) -> None:
    """`qemu-img rebase` (safe unless `unsafe`); an empty `backing` makes the image a root."""
    argv = [QEMU_IMG, "rebase", "-p", "-t", cache, "-T", cache, "-f", "qcow2", "-b", backing]
    if backing:
        argv += ["-F", backing_fmt]
    if unsafe:
        argv.append("-u")
    run([*argv, str(path)])


def corrupt_refcount_of_first_data_cluster(path: Path) -> None:
    """Zero the refcount of the data cluster that backs guest offset 0 (a qcow2 corruption).

    Parses the qcow2 header (cluster_bits @20, L1 offset @40, refcount table offset @48,
    refcount_order @96) so it does not depend on the image layout. The guest offset 0 must be
    allocated in this image, e.g. by `write_pattern(path, "qcow2", 1, 0, 65536)` first.
    """
    offset_mask = 0x00FFFFFFFFFFFE00
    with path.open("r+b") as f:
        header = f.read(104)
        cluster_bits = int.from_bytes(header[20:24], "big")
        l1_offset = int.from_bytes(header[40:48], "big")
        reftable_offset = int.from_bytes(header[48:56], "big")
        refcount_order = int.from_bytes(header[96:100], "big")
        f.seek(l1_offset)
        l2_offset = int.from_bytes(f.read(8), "big") & offset_mask
        f.seek(l2_offset)
        data_offset = int.from_bytes(f.read(8), "big") & offset_mask
        if not l2_offset or not data_offset:
            raise ValueError(f"guest offset 0 of {path} is not allocated")
        entry_bits = 1 << refcount_order
        per_block = (1 << cluster_bits) * 8 // entry_bits
        index = data_offset >> cluster_bits
        f.seek(reftable_offset + 8 * (index // per_block))
        refblock = int.from_bytes(f.read(8), "big") & offset_mask
        if entry_bits < 8:
            raise ValueError("sub-byte refcounts not supported")
        f.seek(refblock + (index % per_block) * entry_bits // 8)
        f.write(b"\0" * (entry_bits // 8))
