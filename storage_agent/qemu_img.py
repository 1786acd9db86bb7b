"""Typed wrappers around the ``qemu-img`` commands the agent runs.

Every command is an argv list (never a shell) with a timeout and explicit formats, so qemu-img
never probes one. Inspection commands pass ``-U`` and parse ``--output=json``.

Long commands (commit, rebase) report progress from ``-p`` and are abortable: setting the
``cancel`` event terminates the child. They accept ``pass_fds``: the agent passes the fds of the
per-volume flocks it holds, so a qemu-img orphaned by a dying agent keeps holding those locks
until it exits, and a restarted agent reports VOLUME_BUSY instead of racing it. That was chosen
over ``PR_SET_PDEATHSIG``, which fires when the *thread* that forked exits and needs an
async-unsafe ``preexec_fn`` in a threaded server; letting an orphaned commit or safe rebase run
to completion is harmless because both are idempotent.
"""

from __future__ import annotations

import errno
import json
import os
import re
import selectors
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

QEMU_IMG = "qemu-img"
SHORT_TIMEOUT_S = 120.0
LONG_TIMEOUT_S = 24 * 3600.0
_KILL_GRACE_S = 5.0
_POLL_S = 0.1
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

ProgressCallback = Callable[[float], None]


class QemuImgError(Exception):
    """qemu-img failed: the argv, its exit code (negative: killed by that signal) and stderr."""

    def __init__(self, cmd: Sequence[str], rc: int, stderr: str) -> None:
        super().__init__(f"{' '.join(cmd)} failed with rc={rc}: {stderr.strip()[-500:]}")
        self.cmd = tuple(cmd)
        self.rc = rc
        self.stderr = stderr


@dataclass(frozen=True)
class ImageInfo:
    """The fields of ``qemu-img info --output=json`` the agent uses."""

    format: str
    virtual_size: int
    actual_size: int
    backing_name: str | None
    backing_format: str | None
    corrupt: bool


@dataclass(frozen=True)
class CheckReport:
    """The result of ``qemu-img check --output=json``."""

    corruptions: int
    leaks: int
    check_errors: int
    image_end_offset: int

    @property
    def ok(self) -> bool:
        """No corruption and no check error; leaked clusters only waste space."""
        return self.corruptions == 0 and self.check_errors == 0


def version() -> str:
    """The qemu-img version, e.g. ``7.2.22``."""
    out = _run([QEMU_IMG, "--version"], timeout=30.0)
    match = re.search(r"version\s+(\S+)", out)
    return match.group(1) if match else out.splitlines()[0]


def create_base(path: str, size: int, fmt: str) -> None:
    """Create a raw or qcow2 image of ``size`` bytes at ``path`` (overwrites it!)."""
    start_create_base(path, size, fmt).wait()


def start_create_base(path: str, size: int, fmt: str) -> Started:
    """:func:`create_base`, started: the caller may work meanwhile, then ``wait()``."""
    options = ["-o", "compat=1.1"] if fmt == "qcow2" else []
    return Started([QEMU_IMG, "create", "-q", "-f", fmt, *options, path, str(size)], output=False)


def create_overlay(path: str, backing_name: str, backing_fmt: str, size: int) -> None:
    """Create a qcow2 overlay whose backing is ``backing_name`` (relative to ``path``'s dir).

    ``-u`` with an explicit size: the backing chain is not opened.
    """
    start_create_overlay(path, backing_name, backing_fmt, size).wait()


def start_create_overlay(path: str, backing_name: str, backing_fmt: str, size: int) -> Started:
    """:func:`create_overlay`, started: the caller may work meanwhile, then ``wait()``."""
    options = ["-o", "compat=1.1", "-b", backing_name, "-F", backing_fmt, "-u"]
    argv = [QEMU_IMG, "create", "-q", "-f", "qcow2", *options, path, str(size)]
    return Started(argv, output=False)


def info(path: str, fmt: str) -> ImageInfo:
    """``qemu-img info -U --output=json -f fmt path`` (the backing chain is not opened)."""
    return start_info(path, fmt).wait_info()


def start_info(path: str, fmt: str) -> Started:
    """:func:`info`, started; collect it with ``wait_info()``."""
    return Started([QEMU_IMG, "info", "-U", "--output=json", "-f", fmt, path])


def infos(*images: tuple[str, str]) -> list[ImageInfo]:
    """:func:`info` of several ``(path, fmt)`` images, run concurrently; errors in order."""
    started: list[Started] = []
    try:
        for path, fmt in images:
            started.append(start_info(path, fmt))
        return [command.wait_info() for command in started]
    finally:
        for command in started:
            command.cancel()


def check(path: str) -> CheckReport:
    """``qemu-img check -f qcow2 --output=json``; rc 2 (corrupt) and 3 (leaks) carry a report."""
    data = _json(_run([QEMU_IMG, "check", "-f", "qcow2", "--output=json", path], ok_rcs=(0, 2, 3)))
    return CheckReport(
        corruptions=int(data.get("corruptions", 0)),
        leaks=int(data.get("leaks", 0)),
        check_errors=int(data.get("check-errors", 0)),
        image_end_offset=int(data.get("image-end-offset", 0)),
    )


def commit(
    top: str,
    base: str,
    *,
    cache: str,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    pass_fds: Sequence[int] = (),
) -> None:
    """Write ``top``'s data into its backing ``base``; with ``-b`` top is left intact."""
    _run_long(
        [QEMU_IMG, "commit", "-p", "-t", cache, "-b", base, "-f", "qcow2", top],
        progress=progress,
        cancel=cancel,
        pass_fds=pass_fds,
    )


def rebase_safe(
    path: str,
    new_backing_name: str | None,
    new_backing_fmt: str | None,
    *,
    cache: str,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    pass_fds: Sequence[int] = (),
) -> None:
    """Safe rebase (no ``-u``): copies what the old chain provides and the new one lacks.

    ``new_backing_name=None`` makes the image standalone.
    """
    argv = [QEMU_IMG, "rebase", "-p", "-t", cache, "-T", cache, "-f", "qcow2"]
    argv += ["-b", new_backing_name or ""]
    if new_backing_name is not None:
        argv += ["-F", new_backing_fmt or "qcow2"]
    _run_long([*argv, path], progress=progress, cancel=cancel, pass_fds=pass_fds)


def set_backing_format(path: str, backing_name: str, backing_fmt: str) -> None:
    """Rewrite only the backing *format* in ``path``'s header (``rebase -u``, same backing).

    Correct only when ``backing_name`` keeps naming the very file whose content the image
    was written over, e.g. after a merge replaced it with a raw file of identical content.
    """
    _run([QEMU_IMG, "rebase", "-u", "-f", "qcow2", "-b", backing_name, "-F", backing_fmt, path])


def cache_mode(preferred: str, path: str) -> str:
    """``preferred``, or ``writeback`` when it is ``none`` and ``path`` refuses O_DIRECT."""
    if preferred != "none":
        return preferred
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.EINVAL:
            return "writeback"
        return preferred
    os.close(fd)
    return preferred


def _json(text: str) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"unexpected qemu-img JSON: {text[:200]!r}")
    return data


def _run(argv: list[str], *, timeout: float = SHORT_TIMEOUT_S, ok_rcs: Sequence[int] = (0,)) -> str:
    return Started(argv, timeout=timeout).wait(ok_rcs)


class Started:
    """A short command already running; :meth:`wait` collects it (call it exactly once).

    Starting a command and waiting for it separately lets the caller do its own I/O while
    qemu-img runs. ``output=False`` sends stdout to /dev/null (only stderr is collected).
    """

    def __init__(
        self, argv: list[str], *, timeout: float = SHORT_TIMEOUT_S, output: bool = True
    ) -> None:
        self.argv = argv
        self._done = False
        self._timeout = timeout
        self._started = time.monotonic()
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if output else subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def wait(self, ok_rcs: Sequence[int] = (0,)) -> str:
        """The command's stdout; QemuImgError on another exit code or on the timeout."""
        self._done = True
        remaining = max(0.0, self._timeout - (time.monotonic() - self._started))
        try:
            out, err = self._proc.communicate(timeout=remaining)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, err = self._proc.communicate()
            stderr = (err or b"").decode("utf-8", "replace")
            raise QemuImgError(
                self.argv, -1, f"{stderr}\ntimed out after {self._timeout:.0f} s"
            ) from None
        except BaseException:
            self._proc.kill()
            self._proc.wait()
            raise
        stderr = err.decode("utf-8", "replace")
        if self._proc.returncode not in ok_rcs:
            raise QemuImgError(self.argv, self._proc.returncode, stderr)
        return (out or b"").decode("utf-8", "replace")

    def wait_info(self) -> ImageInfo:
        """:meth:`wait` for an ``info --output=json`` command, parsed."""
        data = _json(self.wait())
        specific = data.get("format-specific", {}).get("data", {})
        return ImageInfo(
            format=str(data["format"]),
            virtual_size=int(data["virtual-size"]),
            actual_size=int(data.get("actual-size", 0)),
            backing_name=data.get("backing-filename"),
            backing_format=data.get("backing-filename-format"),
            corrupt=bool(specific.get("corrupt", False)),
        )

    def cancel(self) -> None:
        """Kill and reap the command unless it was waited for (when the caller gives up)."""
        if not self._done:
            self._done = True
            self._proc.kill()
            self._proc.communicate()


def _run_long(
    argv: list[str],
    *,
    progress: ProgressCallback | None,
    cancel: threading.Event | None,
    pass_fds: Sequence[int],
    timeout: float = LONG_TIMEOUT_S,
) -> None:
    """Run a ``-p`` command, reporting progress, until it exits, is cancelled or times out."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=tuple(pass_fds),
    )
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    stderr = bytearray()
    tail = b""
    reason = ""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        open_streams = 2
        while open_streams:
            if cancel is not None and cancel.is_set():
                reason = "cancelled"
                break
            if time.monotonic() > deadline:
                reason = f"timed out after {timeout:.0f} s"
                break
            for key, _ in selector.select(_POLL_S):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                    open_streams -= 1
                elif key.fileobj is proc.stderr:
                    stderr += chunk
                else:
                    tail = _report_progress(tail + chunk, progress)
    if reason:
        _stop(proc)
    rc = proc.wait()
    proc.stdout.close()
    proc.stderr.close()
    text = stderr.decode("utf-8", "replace")
    if reason:
        raise QemuImgError(argv, rc, f"{text}\n{reason}")
    if rc != 0:
        raise QemuImgError(argv, rc, text)


def _report_progress(buffer: bytes, progress: ProgressCallback | None) -> bytes:
    """Report the last complete ``(NN.NN/100%)`` record; return the unparsed remainder."""
    matches = list(_PROGRESS.finditer(buffer))
    if not matches:
        return buffer[-64:]
    if progress is not None:
        progress(float(matches[-1].group(1)))
    return buffer[matches[-1].end() :]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(_KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        proc.kill()
