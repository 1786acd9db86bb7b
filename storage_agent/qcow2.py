"""Read a qcow2 image's backing-file name straight from its header.

Used to find a volume's children among its siblings without one qemu-img spawn per file.
The header starts with the magic ``QFI\\xfb``, then (big-endian) u32 version, u64
backing_file_offset at offset 8 and u32 backing_file_size at offset 16.
"""

from __future__ import annotations

import os
import struct

MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQI")
_MAX_NAME = 1023


def backing_name(path: str) -> str | None:
    """The backing-file name of the qcow2 image at ``path``; None for none or a non-qcow2 file.

    Symlinks are not followed (``O_NOFOLLOW`` raises OSError).
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        header = os.pread(fd, _HEADER.size, 0)
        if len(header) < _HEADER.size:
            return None
        magic, _version, offset, size = _HEADER.unpack(header)
        if magic != MAGIC or offset == 0 or size == 0:
            return None
        raw = os.pread(fd, min(size, _MAX_NAME + 1), offset)
    finally:
        os.close(fd)
    return raw.decode("utf-8", "replace")
