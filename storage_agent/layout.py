"""Where things live on a storage domain (SPEC §6.1), and path confinement (SPEC §6.2).

::

    <root>/<domain_id>/domain.json                          {id, name, version}
    <root>/<domain_id>/images/<disk_id>/<volume_id>         the volume file
    <root>/<domain_id>/images/<disk_id>/<volume_id>.meta.json   its sidecar
    <root>/<domain_id>/memory/<memory_id>/{dump,meta.json}
    <root>/<domain_id>/tombstones/<volume_id>               {volume_id, deleted_at, op_id}
    <root>/<domain_id>/trash/                               files being unlinked (see Trash)

Paths are built only from validated ids. Every path must resolve inside ``realpath(root)``
and no component below the root may be a symlink; files are opened with ``O_NOFOLLOW``.
Since the root is resolved once and every component below it is a plain name checked with
``lstat``, a path that passes cannot resolve outside the root (short of a rename race between
the check and the use, which only someone with write access to the root could stage).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from storage_agent import qcow2
from storage_agent.errors import AgentError, Reason, invalid_field
from storage_agent.model import (
    StrayFile,
    VolumeFormat,
    VolumeMeta,
    format_time,
    parse_time,
    utc_now,
)

LAYOUT_VERSION = 1
DOMAIN_FILE = "domain.json"
DOMAIN_DIRS = ("images", "memory", "tombstones", "trash")
SIDECAR_SUFFIX = ".meta.json"
TMP_SUFFIX = ".tmp"
_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_NIL_ID = "00000000-0000-0000-0000-000000000000"
_OP_ID = re.compile(
    r"^(?P<id>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})(:\d{1,9})?(:undo)?$"
)
_MAX_CHAIN = 4096
# Below this many allocated bytes an unlink is cheap even with ``discard``: done inline.
INLINE_UNLINK_BYTES = 1 << 20


def is_id(value: str) -> bool:
    """True for a lowercase canonical UUID other than the nil UUID."""
    return bool(_ID.fullmatch(value)) and value != _NIL_ID


def validate_id(value: str, field_name: str) -> str:
    """``value`` if it is a valid id, else INVALID_ID naming the request field."""
    if not is_id(value):
        raise AgentError(
            Reason.INVALID_ID,
            f"{field_name} must be a lowercase canonical non-nil UUID, got {value[:80]!r}",
            {"field": field_name, "value": value[:80]},
        )
    return value


def validate_optional_id(value: str, field_name: str) -> str | None:
    """None for an empty string, else :func:`validate_id`."""
    return validate_id(value, field_name) if value else None


def validate_op_id(value: str) -> str:
    """``<uuid>[:<seq>][:undo]``, else INVALID_FIELD(field=op_id)."""
    match = _OP_ID.fullmatch(value)
    if not match or match.group("id") == _NIL_ID:
        raise invalid_field("op_id", "expected <uuid>, <uuid>:<seq> or <uuid>:<seq>:undo")
    return value


def backing_id(name: str | None, volume_id: str) -> str | None:
    """The parent id named by a backing-file name; CHAIN_CORRUPT if it is not a bare id."""
    if name is None or name == "":
        return None
    if not is_id(name):
        raise AgentError(
            Reason.CHAIN_CORRUPT,
            f"volume {volume_id} has backing file {name[:200]!r}, which is not a bare volume id",
            {"volume_id": volume_id, "backing_file": name[:200]},
        )
    return name


def fsync_dir(path: Path) -> None:
    """fsync a directory, so a rename or unlink in it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_json(path: Path, data: Any, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` as JSON: tmp + fsync + rename + fsync(dir).

    ``durable=False`` skips both fsyncs: the replacement is still atomic, and survives the
    process being killed, but not the machine losing power.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TMP_SUFFIX}")
    stage_json(tmp, data, durable=durable)
    publish(tmp, path, durable=durable)


def staged_name(name: str) -> str:
    """A fixed temporary name for a file named ``name``, for a writer whose lock makes the
    name its own (so a crash leftover is found and replaced, unlike a random one)."""
    return f".{name}{TMP_SUFFIX}"


def stage_json(tmp: Path, data: Any, *, durable: bool = True) -> None:
    """Write ``data`` as JSON to the new file ``tmp`` (``O_EXCL``) and fsync it (if durable).

    The first half of an atomic write; :func:`publish` is the second. Staging can be done
    early, e.g. while qemu-img runs, since nobody reads the temporary name.
    """
    payload = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def publish(tmp: Path, path: Path, *, durable: bool = True) -> None:
    """Rename the staged ``tmp`` over ``path``, then fsync the directory if durable (which
    also makes earlier renames in that directory durable)."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object at ``path`` (not following a symlink), or None if it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as handle:
        data = json.loads(handle.read())
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    return data


def remove_file(path: Path) -> bool:
    """Unlink ``path`` and fsync its directory; False if it was already absent."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def free_space(path: Path) -> tuple[int, int]:
    """(free bytes available to us, total bytes) of the filesystem holding ``path``."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize


@dataclass(frozen=True)
class DomainMeta:
    """A domain's ``domain.json``."""

    domain_id: str
    name: str
    version: int = LAYOUT_VERSION


@dataclass
class DiskListing:
    """The classified entries of one disk directory."""

    volumes: dict[str, VolumeMeta] = field(default_factory=dict)
    data_only: set[str] = field(default_factory=set)
    strays: list[StrayFile] = field(default_factory=list)


class Layout:
    """Paths, sidecars, domain documents and tombstones under one agent root."""

    def __init__(self, root: Path, domains: Sequence[str] = ()) -> None:
        self.root = Path(os.path.realpath(root))
        self._prefix = str(self.root).rstrip("/")  # "" for "/", so joins never start with "//"
        self._domains = frozenset(domains)

    # Paths.

    def domain_dir(self, domain_id: str) -> Path:
        """``<root>/<domain_id>``."""
        return self._confined(domain_id)

    def disk_dir(self, domain_id: str, disk_id: str) -> Path:
        """``<root>/<domain_id>/images/<disk_id>``."""
        return self._confined(domain_id, "images", disk_id)

    def volume_path(self, domain_id: str, disk_id: str, volume_id: str) -> Path:
        """The volume file."""
        return self._confined(domain_id, "images", disk_id, volume_id)

    def sidecar_path(self, domain_id: str, disk_id: str, volume_id: str) -> Path:
        """The volume's sidecar."""
        return self._confined(domain_id, "images", disk_id, volume_id + SIDECAR_SUFFIX)

    def staged_sidecar_path(self, domain_id: str, disk_id: str, volume_id: str) -> Path:
        """Where CreateVolume stages the new volume's sidecar (see :func:`stage_json`)."""
        return self._confined(domain_id, "images", disk_id, staged_name(volume_id + SIDECAR_SUFFIX))

    def tmp_path(self, domain_id: str, disk_id: str, volume_id: str) -> Path:
        """Where a volume is written before its rename into place."""
        return self._confined(domain_id, "images", disk_id, volume_id + TMP_SUFFIX)

    def tombstone_path(self, domain_id: str, volume_id: str) -> Path:
        """The volume's tombstone."""
        return self._confined(domain_id, "tombstones", volume_id)

    def memory_dir(self, domain_id: str, memory_id: str) -> Path:
        """A memory state's directory."""
        return self._confined(domain_id, "memory", memory_id)

    def trash_dir(self, domain_id: str) -> Path:
        """Where dropped files wait to be unlinked."""
        return self._confined(domain_id, "trash")

    def _confined(self, *parts: str) -> Path:
        """``root/parts...``, refusing a part that could leave the root or a symlinked part.

        The root is already a realpath, so plain names without symlinks stay inside it. Every
        existing component is checked with ``lstat``; built from strings, since this runs a
        dozen times per request and pathlib joins cost more than the ``lstat`` calls.
        """
        current = self._prefix
        existing = True
        for part in parts:
            if not part or part in (".", "..") or "/" in part or "\0" in part:
                raise _outside(self.root.joinpath(*parts))
            current = f"{current}/{part}"
            if existing:
                try:
                    mode = os.lstat(current).st_mode
                except FileNotFoundError:
                    existing = False
                    continue
                if stat.S_ISLNK(mode):
                    raise _outside(Path(current))
        return Path(current)

    # Domains.

    def is_served(self, domain_id: str) -> bool:
        """True when this agent may serve ``domain_id`` (listed, or any when none listed)."""
        return not self._domains or domain_id in self._domains

    def read_domain(self, domain_id: str) -> DomainMeta | None:
        """The domain's ``domain.json``, or None if it does not exist."""
        data = read_json(self._confined(domain_id, DOMAIN_FILE))
        if data is None:
            return None
        return DomainMeta(str(data["id"]), str(data["name"]), int(data.get("version", 1)))

    def require_domain(self, domain_id: str) -> DomainMeta:
        """The served, initialised domain, else DOMAIN_NOT_FOUND."""
        meta = self.read_domain(domain_id) if self.is_served(domain_id) else None
        if meta is None:
            raise AgentError(
                Reason.DOMAIN_NOT_FOUND,
                f"storage domain {domain_id} is not served by this agent",
                {"domain_id": domain_id},
            )
        return meta

    def init_domain(self, domain_id: str, name: str) -> DomainMeta:
        """Create the domain's directories and write its ``domain.json`` (idempotent)."""
        domain_dir = self.domain_dir(domain_id)
        domain_dir.mkdir(mode=0o755, exist_ok=True)
        for sub in DOMAIN_DIRS:
            self._confined(domain_id, sub).mkdir(mode=0o755, exist_ok=True)
        meta = DomainMeta(domain_id, name)
        if self.read_domain(domain_id) != meta:
            atomic_write_json(
                self._confined(domain_id, DOMAIN_FILE),
                {"id": domain_id, "name": name, "version": LAYOUT_VERSION},
            )
        fsync_dir(self.root)
        return meta

    def served_domains(self) -> list[DomainMeta]:
        """Every served domain that has a ``domain.json``, sorted by id."""
        if self._domains:
            candidates: Iterable[str] = self._domains
        else:
            try:
                candidates = [entry.name for entry in os.scandir(self.root) if is_id(entry.name)]
            except FileNotFoundError:
                candidates = []
        found = []
        for domain_id in sorted(candidates):
            try:
                meta = self.read_domain(domain_id)
            except (AgentError, OSError, ValueError, KeyError):
                continue
            if meta is not None:
                found.append(meta)
        return found

    # Volumes.

    def read_sidecar(self, domain_id: str, disk_id: str, volume_id: str) -> VolumeMeta | None:
        """The volume's sidecar, or None."""
        data = read_json(self.sidecar_path(domain_id, disk_id, volume_id))
        return VolumeMeta.from_json(data) if data is not None else None

    def write_sidecar(self, meta: VolumeMeta) -> None:
        """Write (replace) the volume's sidecar atomically."""
        path = self.sidecar_path(meta.domain_id, meta.disk_id, meta.volume_id)
        atomic_write_json(path, meta.to_json())

    def volume_exists(self, domain_id: str, disk_id: str, volume_id: str) -> bool:
        """True when the volume file exists (as a regular file)."""
        try:
            mode = os.lstat(self.volume_path(domain_id, disk_id, volume_id)).st_mode
        except FileNotFoundError:
            return False
        return stat.S_ISREG(mode)

    def list_disk(self, domain_id: str, disk_id: str) -> DiskListing:
        """Classify every entry of the disk directory (an absent directory is empty)."""
        listing = DiskListing()
        try:
            entries = {entry.name: entry for entry in os.scandir(self.disk_dir(domain_id, disk_id))}
        except FileNotFoundError:
            return listing
        for name, entry in sorted(entries.items()):
            if name.endswith(TMP_SUFFIX):
                listing.strays.append(StrayFile(name, "temporary file"))
            elif not entry.is_file(follow_symlinks=False):
                listing.strays.append(StrayFile(name, "not a regular file"))
            elif name.endswith(SIDECAR_SUFFIX) and is_id(name[: -len(SIDECAR_SUFFIX)]):
                if name[: -len(SIDECAR_SUFFIX)] not in entries:
                    listing.strays.append(StrayFile(name, "sidecar without volume"))
            elif not is_id(name):
                listing.strays.append(StrayFile(name, "unexpected file"))
            elif name + SIDECAR_SUFFIX not in entries:
                listing.data_only.add(name)
                listing.strays.append(StrayFile(name, "no sidecar"))
            else:
                try:
                    meta = self.read_sidecar(domain_id, disk_id, name)
                except (ValueError, KeyError) as exc:
                    listing.strays.append(StrayFile(name, f"unreadable sidecar: {exc}"))
                    continue
                if meta is None or meta.volume_id != name or meta.disk_id != disk_id:
                    listing.data_only.add(name)
                    listing.strays.append(StrayFile(name, "sidecar missing or mismatched"))
                else:
                    listing.volumes[name] = meta
        return listing

    def header_backing(
        self, domain_id: str, disk_id: str, volume_id: str, fmt: VolumeFormat | None
    ) -> str | None:
        """The backing name in the volume's qcow2 header (raw volumes have none).

        ``fmt`` None means unknown (no sidecar): the header is sniffed.
        """
        if fmt is VolumeFormat.RAW:
            return None
        return qcow2.backing_name(str(self.volume_path(domain_id, disk_id, volume_id)))

    def children(self, domain_id: str, disk_id: str, volume_id: str) -> list[str]:
        """Sibling volumes (complete or not) whose backing is ``volume_id``, sorted."""
        listing = self.list_disk(domain_id, disk_id)
        found = []
        candidates: dict[str, VolumeFormat | None] = dict.fromkeys(listing.data_only)
        candidates.update((vid, meta.format) for vid, meta in listing.volumes.items())
        for vid, fmt in candidates.items():
            if vid == volume_id:
                continue
            try:
                name = self.header_backing(domain_id, disk_id, vid, fmt)
            except OSError:
                continue
            if name == volume_id:
                found.append(vid)
        return sorted(found)

    def ancestors(self, domain_id: str, disk_id: str, volume_id: str) -> list[str]:
        """The backing chain above ``volume_id``, nearest first, from the qcow2 headers.

        CHAIN_CORRUPT for a backing name that is not a bare id, a missing backing file or a
        cycle.
        """
        chain: list[str] = []
        current = volume_id
        while True:
            meta = self.read_sidecar(domain_id, disk_id, current)
            name = self.header_backing(domain_id, disk_id, current, meta.format if meta else None)
            parent = backing_id(name, current)
            if parent is None:
                return chain
            if parent == volume_id or parent in chain or len(chain) >= _MAX_CHAIN:
                raise AgentError(
                    Reason.CHAIN_CORRUPT,
                    f"the backing chain of volume {volume_id} has a cycle",
                    {"volume_id": volume_id},
                )
            if not self.volume_exists(domain_id, disk_id, parent):
                raise AgentError(
                    Reason.CHAIN_CORRUPT,
                    f"volume {current} is backed by {parent}, which does not exist",
                    {"volume_id": current, "backing_file": parent},
                )
            chain.append(parent)
            current = parent

    # Tombstones.

    def is_tombstoned(self, domain_id: str, volume_id: str) -> bool:
        """True when a tombstone exists for ``volume_id``."""
        return os.path.lexists(self.tombstone_path(domain_id, volume_id))

    def write_tombstone(self, domain_id: str, volume_id: str, op_id: str) -> None:
        """Record that ``volume_id`` was deleted (kept 7 days), unless already recorded."""
        if self.is_tombstoned(domain_id, volume_id):
            return
        tombstones = self._confined(domain_id, "tombstones")
        tombstones.mkdir(mode=0o755, exist_ok=True)
        atomic_write_json(
            self.tombstone_path(domain_id, volume_id),
            {"volume_id": volume_id, "deleted_at": format_time(utc_now()), "op_id": op_id},
        )

    def prune_tombstones(self, max_age: timedelta) -> int:
        """Delete tombstones older than ``max_age`` in every served domain; return the count."""
        cutoff = utc_now() - max_age
        removed = 0
        for domain in self.served_domains():
            directory = self._confined(domain.domain_id, "tombstones")
            try:
                names = [name for name in os.listdir(directory) if is_id(name)]
            except FileNotFoundError:
                continue
            for name in names:
                path = directory / name
                try:
                    data = read_json(path)
                    deleted_at = parse_time(str(data["deleted_at"])) if data else None
                except (OSError, ValueError, KeyError):
                    deleted_at = None
                if deleted_at is None:
                    deleted_at = datetime.fromtimestamp(os.lstat(path).st_mtime, cutoff.tzinfo)
                if deleted_at < cutoff:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed


class Trash:
    """Files taken out of the layout now and unlinked by a background thread.

    Unlinking a big file is slow on filesystems mounted with ``discard`` (150-500 ms per GiB),
    so merges and deletes rename the file into the domain's ``trash`` directory, or hard-link
    it there when its name must stay until a rename replaces it, and a worker unlinks it
    (operations hand it over once their outcome is recorded, see ``OpContext.defer``). Small
    files, whose unlink is cheap, are unlinked inline, so nothing lingers after the reply.
    Leftovers of a crash are removed by :meth:`empty` (at start and by maintenance).
    """

    def __init__(self, layout: Layout) -> None:
        self._layout = layout
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trash")

    def _slot(self, domain_id: str) -> Path:
        directory = self._layout.trash_dir(domain_id)
        directory.mkdir(mode=0o700, exist_ok=True)
        return directory / secrets.token_hex(8)

    def drop(
        self,
        domain_id: str,
        path: Path,
        defer: Callable[[Callable[[], object]], None] | None = None,
    ) -> bool:
        """Remove ``path`` from its directory now and unlink it (see :meth:`release`); False
        if it was absent."""
        slot = self._slot(domain_id)
        try:
            os.rename(path, slot)
        except FileNotFoundError:
            return False
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            return remove_file(path)
        fsync_dir(path.parent)
        self.release(slot, defer)
        return True

    def release(
        self, slot: Path, defer: Callable[[Callable[[], object]], None] | None = None
    ) -> None:
        """Unlink a trash entry: inline when small, else in the background, handed over
        through ``defer`` (an operation's ``OpContext.defer``) when given."""
        try:
            small = allocated_size(slot) <= INLINE_UNLINK_BYTES
        except FileNotFoundError:
            return
        if small:
            slot.unlink(missing_ok=True)
        elif defer is None:
            self.purge(slot)
        else:
            defer(lambda: self.purge(slot))

    def link(self, domain_id: str, path: Path) -> Path | None:
        """A second name for ``path`` in the trash, so replacing ``path`` frees nothing yet.

        Pass the result to :meth:`release` once ``path`` was replaced. None when ``path`` is
        absent or the trash is on another filesystem (the replacement then frees inline).
        """
        slot = self._slot(domain_id)
        try:
            os.link(path, slot, follow_symlinks=False)
        except OSError:
            return None
        return slot

    def purge(self, slot: Path) -> None:
        """Unlink a trash entry in the background."""
        self._worker.submit(slot.unlink, missing_ok=True)

    def empty(self) -> int:
        """Unlink every trash entry of every served domain now; return the count."""
        count = 0
        for domain in self._layout.served_domains():
            try:
                entries = list(os.scandir(self._layout.trash_dir(domain.domain_id)))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.is_file(follow_symlinks=False):
                    Path(entry.path).unlink(missing_ok=True)
                    count += 1
        return count


def _outside(path: Path) -> AgentError:
    return AgentError(
        Reason.PATH_OUTSIDE_ROOT,
        f"path {str(path)[:300]!r} leaves the agent root or crosses a symlink",
        {"path": str(path)[:300]},
    )


def require_free_space(path: Path, required: int) -> None:
    """NO_SPACE unless the filesystem holding ``path`` has ``required`` bytes free."""
    free, _ = free_space(path)
    if free < required:
        raise AgentError(
            Reason.NO_SPACE,
            f"{required} bytes needed, {free} free",
            {"required_bytes": str(required), "free_bytes": str(free)},
        )


def allocated_size(path: Path) -> int:
    """Bytes allocated to the file (what qemu-img reports as actual-size)."""
    return os.stat(path, follow_symlinks=False).st_blocks * 512


def fsync_file(path: Path) -> None:
    """fsync a file's data and metadata."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
