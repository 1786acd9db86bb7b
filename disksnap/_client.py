"""The synchronous engine client: one method per engine operation over the generated stubs.

Queries return plain objects (``disksnap._types``). Mutating calls return the operation's
:class:`~disksnap.Job`: by default they wait for it to end (``wait=True``), following it with
``WatchJob``; with ``wait=False`` they return a :class:`JobHandle` at once, whose
``.wait(progress=...)`` does the same later.

Idempotency and retries. Every mutating call carries a ``request_id`` (a fresh UUID unless the
caller passes one). The channel's gRPC service config retries *every* engine RPC on
``UNAVAILABLE`` (up to 5 attempts, exponential backoff). That is safe for queries, which have
no effect, and for mutating calls precisely because of the request_id: a retried request is
byte-identical, so the engine either never saw the first attempt or returns the job the first
attempt created (SPEC §5.3). No other code is retried automatically: ``DEADLINE_EXCEEDED`` on a
mutating call and lock conflicts (``ABORTED``) are reported to the caller, who can retry with
``request_id=err.request_id``. gRPC retries unary calls, and ``WatchJob`` until its first
message; a watch that breaks later is resumed by ``JobHandle.wait``.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, TypedDict, Unpack, overload

import grpc
from google.protobuf import field_mask_pb2

from disksnap import _convert as convert
from disksnap._types import (
    Disk,
    DiskFormat,
    DiskInterface,
    DiskKind,
    DiskSelection,
    DiskUpdate,
    Host,
    Job,
    JobKind,
    JobState,
    Nic,
    RunState,
    Snapshot,
    SnapshotDetail,
    StorageDomain,
    TlsConfig,
    Violation,
    Vm,
    VolumeTree,
)
from disksnap.engine.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    inventory_pb2,
    inventory_pb2_grpc,
    jobs_pb2,
    jobs_pb2_grpc,
    snapshots_pb2,
    snapshots_pb2_grpc,
)
from disksnap.errors import (
    DeadlineExceeded,
    JobFailed,
    Unavailable,
    WaitTimeout,
    from_rpc_error,
)

DEFAULT_ADDRESS = "127.0.0.1:7700"
DEFAULT_TIMEOUT = 30.0
MAX_PAGE_SIZE = 500
RETRY_ATTEMPTS = 5

ProgressCallback = Callable[[Job], object]
"""Called with the job each time it changes; ``job.progress`` never decreases between calls."""

_SERVICES = (
    "disksnap.engine.v1.InventoryService",
    "disksnap.engine.v1.SnapshotService",
    "disksnap.engine.v1.JobService",
    "disksnap.engine.v1.AdminService",
)


def service_config(max_attempts: int = RETRY_ATTEMPTS) -> str:
    """The channel's service config JSON: retry every engine RPC on UNAVAILABLE."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": s} for s in _SERVICES],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


class MutationOptions(TypedDict, total=False):
    """Options every mutating call accepts.

    ``request_id``: the idempotency key (default: a new UUID; pass the same one to retry).
    ``correlation_id``: a free-form tag (≤64 chars ``[A-Za-z0-9._-]``) stored on the job
    (default: the client's ``correlation_id``).
    ``progress``: with ``wait=True``, called on every job change.
    ``wait_timeout``: with ``wait=True``, seconds to wait before raising ``WaitTimeout``.
    """

    request_id: str
    correlation_id: str
    progress: ProgressCallback
    wait_timeout: float


class _ProgressReporter:
    """Delivers job updates to a callback: no repeats, progress never going backwards."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self._callback = callback
        self._last: Job | None = None
        self._high = 0

    def __call__(self, job: Job) -> None:
        if self._callback is None:
            return
        if job.progress < self._high:
            job = dataclasses.replace(job, progress=self._high)
        self._high = job.progress
        if job == self._last:
            return
        self._last = job
        self._callback(job)


class JobHandle:
    """A job that may still be running: ``wait()`` for it, ``refresh()`` or ``watch()`` it."""

    def __init__(self, client: Client, job: Job) -> None:
        self._client = client
        self._job = job

    @property
    def id(self) -> str:
        """The job id."""
        return self._job.id

    @property
    def job(self) -> Job:
        """The job as last seen (not refreshed)."""
        return self._job

    @property
    def done(self) -> bool:
        """True once the last seen state is terminal."""
        return self._job.done

    def __repr__(self) -> str:
        job = self._job
        return f"JobHandle(id={job.id!r}, kind={job.kind.value}, state={job.state.value})"

    def refresh(self) -> Job:
        """Fetch the job's current state."""
        self._job = self._client.get_job(self.id)
        return self._job

    def watch(self) -> Iterator[Job]:
        """Yield the job's current state and then each change until it is terminal."""
        for job in self._client.watch_job(self.id):
            self._job = job
            yield job

    def wait(
        self,
        *,
        progress: ProgressCallback | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Job:
        """Follow the job (``WatchJob``) until it is terminal and return it.

        ``progress`` is called with the job on every change (and once at the start), with
        monotonic ``progress`` values. ``timeout`` (seconds; ``None`` = no limit) raises
        ``WaitTimeout``. With ``check`` (default) a FAILED job raises ``JobFailed``;
        SUCCEEDED_PARTIAL is returned, and its ``outcomes`` tell which disks failed.
        A broken stream (engine restart) is resumed; a persistently unreachable engine raises
        ``Unavailable``.
        """
        reporter = _ProgressReporter(progress)
        reporter(self._job)
        deadline = None if timeout is None else time.monotonic() + timeout
        unreachable_since: float | None = None
        backoff = 0.2
        while not self._job.done:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise WaitTimeout(self._job, timeout or 0.0)
            try:
                for job in self._client._watch(self.id, timeout=remaining):
                    self._job = job
                    unreachable_since = None
                    reporter(job)
                    if job.done:
                        break
            except DeadlineExceeded:
                continue  # the loop re-checks the deadline
            except Unavailable:
                now = time.monotonic()
                unreachable_since = unreachable_since or now
                if now - unreachable_since > self._client.timeout:
                    raise
                time.sleep(backoff if remaining is None else max(0.0, min(backoff, remaining)))
                backoff = min(backoff * 2, 5.0)
        if check and self._job.state is JobState.FAILED:
            raise JobFailed(self._job)
        return self._job


class Client:
    """A connection to a disksnap engine.

    ``address`` is ``host:port``. ``tls``: ``False`` (plaintext, the embedded default),
    ``True`` (TLS trusting the system roots) or a :class:`TlsConfig`. ``token`` is sent as
    ``authorization: Bearer <token>``. ``timeout`` is the deadline of each unary call in
    seconds. ``correlation_id`` (≤64 chars ``[A-Za-z0-9._-]``) tags every job this client
    creates, unless a call passes its own ``correlation_id``; ``list_jobs(correlation_id=...)``
    finds them again. Use as a context manager, or call ``close()``.
    """

    def __init__(
        self,
        address: str = DEFAULT_ADDRESS,
        *,
        tls: bool | TlsConfig = False,
        token: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        correlation_id: str | None = None,
    ) -> None:
        self._address = address
        self._timeout = timeout
        self._correlation_id = correlation_id or ""
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        options: list[tuple[str, Any]] = [
            ("grpc.service_config", service_config()),
            ("grpc.enable_retries", 1),
            ("grpc.service_config_disable_resolution", 1),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
        ]
        if tls is False:
            self._channel = grpc.insecure_channel(address, options=options)
        else:
            cfg = tls if isinstance(tls, TlsConfig) else TlsConfig()
            if cfg.server_name:
                options.append(("grpc.ssl_target_name_override", cfg.server_name))
            creds = grpc.ssl_channel_credentials(
                root_certificates=cfg.root_certificates,
                private_key=cfg.private_key,
                certificate_chain=cfg.certificate_chain,
            )
            self._channel = grpc.secure_channel(address, creds, options=options)
        self._inventory = inventory_pb2_grpc.InventoryServiceStub(self._channel)
        self._snapshots = snapshots_pb2_grpc.SnapshotServiceStub(self._channel)
        self._jobs = jobs_pb2_grpc.JobServiceStub(self._channel)
        self._admin = admin_pb2_grpc.AdminServiceStub(self._channel)

    # -- plumbing ---------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """The engine address this client talks to."""
        return self._address

    @property
    def timeout(self) -> float:
        """The per-call deadline in seconds."""
        return self._timeout

    @property
    def correlation_id(self) -> str | None:
        """The correlation id mutating calls send unless they pass their own."""
        return self._correlation_id or None

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self._address!r})"

    def _call(
        self,
        rpc: Any,
        request: Any,
        *,
        request_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        try:
            return rpc(request, timeout=timeout or self._timeout, metadata=self._metadata)
        except grpc.RpcError as err:
            raise from_rpc_error(err, request_id=request_id) from err

    def _pages(self, rpc: Any, request: Any, field: str, limit: int | None = None) -> list[Any]:
        items: list[Any] = []
        request.page_size = MAX_PAGE_SIZE if limit is None else min(limit, MAX_PAGE_SIZE)
        while True:
            response = self._call(rpc, request)
            items.extend(getattr(response, field))
            if limit is not None and len(items) >= limit:
                return items[:limit]
            if not response.next_page_token:
                return items
            request.page_token = response.next_page_token

    def _mutate(
        self, rpc: Any, request: Any, wait: bool, options: MutationOptions
    ) -> Job | JobHandle:
        request_id = options.get("request_id") or str(uuid.uuid4())
        request.envelope.CopyFrom(
            common_pb2.RequestEnvelope(
                request_id=request_id,
                correlation_id=options.get("correlation_id", self._correlation_id),
            )
        )
        response = self._call(rpc, request, request_id=request_id)
        handle = JobHandle(self, convert.job_from_proto(response.job))
        if not wait:
            return handle
        return handle.wait(progress=options.get("progress"), timeout=options.get("wait_timeout"))

    def _watch(self, job_id: str, *, timeout: float | None) -> Iterator[Job]:
        stream = self._jobs.WatchJob(
            jobs_pb2.WatchJobRequest(job_id=job_id), timeout=timeout, metadata=self._metadata
        )
        try:
            for message in stream:
                yield convert.job_from_proto(message.job)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        finally:
            stream.cancel()

    # -- hosts and storage domains ----------------------------------------------------------

    def list_hosts(self) -> list[Host]:
        """Every registered host with its UP/DOWN status."""
        hosts = self._pages(self._inventory.ListHosts, inventory_pb2.ListHostsRequest(), "hosts")
        return [convert.host_from_proto(h) for h in hosts]

    def list_storage_domains(self) -> list[StorageDomain]:
        """Every storage domain with its status and space."""
        domains = self._pages(
            self._inventory.ListStorageDomains,
            inventory_pb2.ListStorageDomainsRequest(),
            "domains",
        )
        return [convert.domain_from_proto(d) for d in domains]

    @overload
    def create_storage_domain(
        self,
        name: str,
        host_id: str,
        *,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def create_storage_domain(
        self, name: str, host_id: str, *, wait: Literal[False], **options: Unpack[MutationOptions]
    ) -> JobHandle: ...
    def create_storage_domain(
        self, name: str, host_id: str, *, wait: bool = True, **options: Unpack[MutationOptions]
    ) -> Job | JobHandle:
        """Initialise a storage domain on a host; ``result.domain_id`` names it."""
        request = inventory_pb2.CreateStorageDomainRequest(name=name, host_id=host_id)
        return self._mutate(self._inventory.CreateStorageDomain, request, wait, options)

    # -- VMs --------------------------------------------------------------------------------

    @overload
    def create_vm(
        self,
        name: str,
        *,
        description: str = "",
        cpu_count: int = 1,
        memory_mb: int = 1024,
        custom_properties: Mapping[str, str] | None = None,
        nics: Sequence[Nic] = (),
        home_domain_id: str | None = None,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def create_vm(
        self,
        name: str,
        *,
        description: str = "",
        cpu_count: int = 1,
        memory_mb: int = 1024,
        custom_properties: Mapping[str, str] | None = None,
        nics: Sequence[Nic] = (),
        home_domain_id: str | None = None,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def create_vm(
        self,
        name: str,
        *,
        description: str = "",
        cpu_count: int = 1,
        memory_mb: int = 1024,
        custom_properties: Mapping[str, str] | None = None,
        nics: Sequence[Nic] = (),
        home_domain_id: str | None = None,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Create a VM (DOWN, no disks) and its ACTIVE snapshot; ``result.vm_id`` names it."""
        config = convert.vm_config_to_proto(
            name=name,
            description=description,
            cpu_count=cpu_count,
            memory_mb=memory_mb,
            custom_properties=custom_properties,
            nics=nics,
            home_domain_id=home_domain_id,
        )
        request = inventory_pb2.CreateVmRequest(config=config)
        return self._mutate(self._inventory.CreateVm, request, wait, options)

    def get_vm(self, vm_id: str) -> Vm:
        """One VM with its disks."""
        response = self._call(self._inventory.GetVm, inventory_pb2.GetVmRequest(vm_id=vm_id))
        return convert.vm_from_proto(response.vm)

    def list_vms(self, *, name: str | None = None) -> list[Vm]:
        """Every VM, or the one with exactly this ``name``."""
        vms = self._pages(
            self._inventory.ListVms, inventory_pb2.ListVmsRequest(name=name or ""), "vms"
        )
        return [convert.vm_from_proto(v) for v in vms]

    @overload
    def update_vm(
        self,
        vm_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        cpu_count: int | None = None,
        memory_mb: int | None = None,
        custom_properties: Mapping[str, str] | None = None,
        nics: Sequence[Nic] | None = None,
        home_domain_id: str | None = None,
        disks: Sequence[DiskUpdate] = (),
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def update_vm(
        self,
        vm_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        cpu_count: int | None = None,
        memory_mb: int | None = None,
        custom_properties: Mapping[str, str] | None = None,
        nics: Sequence[Nic] | None = None,
        home_domain_id: str | None = None,
        disks: Sequence[DiskUpdate] = (),
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def update_vm(
        self,
        vm_id: str,
        *,
        name: str | None = None,
        description: str | None = None,
        cpu_count: int | None = None,
        memory_mb: int | None = None,
        custom_properties: Mapping[str, str] | None = None,
        nics: Sequence[Nic] | None = None,
        home_domain_id: str | None = None,
        disks: Sequence[DiskUpdate] = (),
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Change the given fields (``None`` leaves a field as it is) and disk attributes.

        ``home_domain_id=""`` clears the home domain; ``custom_properties`` and ``nics``
        replace the whole map or list.
        """
        fields = {
            "name": name,
            "description": description,
            "cpu_count": cpu_count,
            "memory_mb": memory_mb,
            "custom_properties": custom_properties,
            "nics": nics,
            "home_domain_id": home_domain_id,
        }
        paths = [path for path, value in fields.items() if value is not None]
        config = convert.vm_config_to_proto(
            name=name or "",
            description=description or "",
            cpu_count=cpu_count or 0,
            memory_mb=memory_mb or 0,
            custom_properties=custom_properties,
            nics=nics or (),
            home_domain_id=home_domain_id,
        )
        request = inventory_pb2.UpdateVmRequest(
            vm_id=vm_id, config=config, update_mask=field_mask_pb2.FieldMask(paths=paths)
        )
        for d in disks:
            attrs = {"alias": d.alias, "interface": d.interface, "bootable": d.bootable}
            request.disks.add(
                disk_id=d.disk_id,
                alias=d.alias or "",
                interface=convert.enum_to_proto(d.interface) if d.interface else 0,
                bootable=bool(d.bootable),
                update_mask=field_mask_pb2.FieldMask(
                    paths=[k for k, v in attrs.items() if v is not None]
                ),
            )
        return self._mutate(self._inventory.UpdateVm, request, wait, options)

    @overload
    def set_vm_run_state(
        self,
        vm_id: str,
        run_state: RunState,
        *,
        host_id: str | None = None,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def set_vm_run_state(
        self,
        vm_id: str,
        run_state: RunState,
        *,
        host_id: str | None = None,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def set_vm_run_state(
        self,
        vm_id: str,
        run_state: RunState,
        *,
        host_id: str | None = None,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Record the VM as UP on ``host_id`` (required for UP) or as DOWN."""
        request = inventory_pb2.SetVmRunStateRequest(
            vm_id=vm_id, run_state=convert.enum_to_proto(run_state), host_id=host_id or ""
        )
        return self._mutate(self._inventory.SetVmRunState, request, wait, options)

    @overload
    def remove_vm(
        self, vm_id: str, *, wait: Literal[True] = ..., **options: Unpack[MutationOptions]
    ) -> Job: ...
    @overload
    def remove_vm(
        self, vm_id: str, *, wait: Literal[False], **options: Unpack[MutationOptions]
    ) -> JobHandle: ...
    def remove_vm(
        self, vm_id: str, *, wait: bool = True, **options: Unpack[MutationOptions]
    ) -> Job | JobHandle:
        """Delete a DOWN VM, its snapshots and its snapshot-able disks."""
        request = inventory_pb2.RemoveVmRequest(vm_id=vm_id)
        return self._mutate(self._inventory.RemoveVm, request, wait, options)

    # -- disks ------------------------------------------------------------------------------

    @overload
    def add_disk(
        self,
        alias: str,
        virtual_size: int = 0,
        *,
        domain_id: str | None = None,
        vm_id: str | None = None,
        format: DiskFormat = DiskFormat.COW,
        kind: DiskKind = DiskKind.IMAGE,
        description: str = "",
        shareable: bool = False,
        interface: DiskInterface = DiskInterface.VIRTIO,
        bootable: bool = False,
        lun_id: str | None = None,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def add_disk(
        self,
        alias: str,
        virtual_size: int = 0,
        *,
        domain_id: str | None = None,
        vm_id: str | None = None,
        format: DiskFormat = DiskFormat.COW,
        kind: DiskKind = DiskKind.IMAGE,
        description: str = "",
        shareable: bool = False,
        interface: DiskInterface = DiskInterface.VIRTIO,
        bootable: bool = False,
        lun_id: str | None = None,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def add_disk(
        self,
        alias: str,
        virtual_size: int = 0,
        *,
        domain_id: str | None = None,
        vm_id: str | None = None,
        format: DiskFormat = DiskFormat.COW,
        kind: DiskKind = DiskKind.IMAGE,
        description: str = "",
        shareable: bool = False,
        interface: DiskInterface = DiskInterface.VIRTIO,
        bootable: bool = False,
        lun_id: str | None = None,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Create a disk of ``virtual_size`` bytes on ``domain_id``, attached to ``vm_id``
        if given (floating otherwise); ``result.disk_id`` names it.
        """
        request = inventory_pb2.AddDiskRequest(
            alias=alias,
            description=description,
            kind=convert.enum_to_proto(kind),
            shareable=shareable,
            domain_id=domain_id or "",
            virtual_size=virtual_size,
            format=convert.enum_to_proto(format),
            lun_id=lun_id or "",
            vm_id=vm_id or "",
            interface=convert.enum_to_proto(interface),
            bootable=bootable,
        )
        return self._mutate(self._inventory.AddDisk, request, wait, options)

    @overload
    def remove_disk(
        self, disk_id: str, *, wait: Literal[True] = ..., **options: Unpack[MutationOptions]
    ) -> Job: ...
    @overload
    def remove_disk(
        self, disk_id: str, *, wait: Literal[False], **options: Unpack[MutationOptions]
    ) -> JobHandle: ...
    def remove_disk(
        self, disk_id: str, *, wait: bool = True, **options: Unpack[MutationOptions]
    ) -> Job | JobHandle:
        """Delete a disk and all of its volumes."""
        request = inventory_pb2.RemoveDiskRequest(disk_id=disk_id)
        return self._mutate(self._inventory.RemoveDisk, request, wait, options)

    @overload
    def attach_disk(
        self,
        disk_id: str,
        vm_id: str,
        *,
        interface: DiskInterface = DiskInterface.VIRTIO,
        bootable: bool = False,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def attach_disk(
        self,
        disk_id: str,
        vm_id: str,
        *,
        interface: DiskInterface = DiskInterface.VIRTIO,
        bootable: bool = False,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def attach_disk(
        self,
        disk_id: str,
        vm_id: str,
        *,
        interface: DiskInterface = DiskInterface.VIRTIO,
        bootable: bool = False,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Attach a disk to a DOWN VM."""
        request = inventory_pb2.AttachDiskRequest(
            disk_id=disk_id,
            vm_id=vm_id,
            interface=convert.enum_to_proto(interface),
            bootable=bootable,
        )
        return self._mutate(self._inventory.AttachDisk, request, wait, options)

    @overload
    def detach_disk(
        self,
        disk_id: str,
        vm_id: str,
        *,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def detach_disk(
        self, disk_id: str, vm_id: str, *, wait: Literal[False], **options: Unpack[MutationOptions]
    ) -> JobHandle: ...
    def detach_disk(
        self, disk_id: str, vm_id: str, *, wait: bool = True, **options: Unpack[MutationOptions]
    ) -> Job | JobHandle:
        """Detach a disk from a DOWN VM; it becomes floating."""
        request = inventory_pb2.DetachDiskRequest(disk_id=disk_id, vm_id=vm_id)
        return self._mutate(self._inventory.DetachDisk, request, wait, options)

    def get_disk(self, disk_id: str) -> Disk:
        """One disk."""
        response = self._call(
            self._inventory.GetDisk, inventory_pb2.GetDiskRequest(disk_id=disk_id)
        )
        return convert.disk_from_proto(response.disk)

    def list_disks(self, *, vm_id: str | None = None, floating_only: bool = False) -> list[Disk]:
        """The disks of a VM, the floating disks, or (neither given) every disk."""
        request = inventory_pb2.ListDisksRequest(vm_id=vm_id or "", floating_only=floating_only)
        disks = self._pages(self._inventory.ListDisks, request, "disks")
        return [convert.disk_from_proto(d) for d in disks]

    # -- snapshots --------------------------------------------------------------------------

    @overload
    def create_snapshot(
        self,
        vm_id: str,
        description: str,
        *,
        disk_ids: Sequence[str] | None = None,
        save_memory: bool = False,
        atomic: bool = False,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def create_snapshot(
        self,
        vm_id: str,
        description: str,
        *,
        disk_ids: Sequence[str] | None = None,
        save_memory: bool = False,
        atomic: bool = False,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def create_snapshot(
        self,
        vm_id: str,
        description: str,
        *,
        disk_ids: Sequence[str] | None = None,
        save_memory: bool = False,
        atomic: bool = False,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Snapshot a VM; ``result.snapshot_id`` names the new snapshot.

        ``disk_ids``: ``None`` = every attached snapshot-able disk, ``[]`` = configuration
        only, otherwise exactly these disks (SPEC §3.1). ``atomic`` rolls everything back if
        any disk fails; otherwise failed disks are left out (SUCCEEDED_PARTIAL).
        """
        request = snapshots_pb2.CreateSnapshotRequest(
            vm_id=vm_id, description=description, save_memory=save_memory, atomic=atomic
        )
        if disk_ids is not None:
            request.disks.SetInParent()
            request.disks.disk_ids.extend(disk_ids)
        return self._mutate(self._snapshots.CreateSnapshot, request, wait, options)

    def list_snapshots(self, vm_id: str) -> list[Snapshot]:
        """A VM's snapshots: ACTIVE first, then the others oldest first."""
        response = self._call(
            self._snapshots.ListSnapshots, snapshots_pb2.ListSnapshotsRequest(vm_id=vm_id)
        )
        return [convert.snapshot_from_proto(s) for s in response.snapshots]

    def get_snapshot(self, vm_id: str, snapshot_id: str) -> SnapshotDetail:
        """One snapshot with its configuration, memory and (PREVIEW) plan."""
        response = self._call(
            self._snapshots.GetSnapshot,
            snapshots_pb2.GetSnapshotRequest(vm_id=vm_id, snapshot_id=snapshot_id),
        )
        return convert.snapshot_detail_from_proto(response)

    @overload
    def preview_snapshot(
        self,
        vm_id: str,
        *,
        config_snapshot_id: str | None = None,
        disks: Sequence[DiskSelection] = (),
        exclude_disk_ids: Sequence[str] = (),
        restore_memory: bool = False,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def preview_snapshot(
        self,
        vm_id: str,
        *,
        config_snapshot_id: str | None = None,
        disks: Sequence[DiskSelection] = (),
        exclude_disk_ids: Sequence[str] = (),
        restore_memory: bool = False,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def preview_snapshot(
        self,
        vm_id: str,
        *,
        config_snapshot_id: str | None = None,
        disks: Sequence[DiskSelection] = (),
        exclude_disk_ids: Sequence[str] = (),
        restore_memory: bool = False,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Preview a configuration and per-disk volumes (SPEC §3.2).

        Regular: only ``config_snapshot_id``. Custom: ``disks`` and ``exclude_disk_ids``
        together must name every attached snapshot-able disk.
        """
        request = snapshots_pb2.PreviewSnapshotRequest(
            vm_id=vm_id,
            config_snapshot_id=config_snapshot_id or "",
            restore_memory=restore_memory,
            disks=[convert.disk_selection_to_proto(s) for s in disks],
            exclude_disk_ids=list(exclude_disk_ids),
        )
        return self._mutate(self._snapshots.PreviewSnapshot, request, wait, options)

    @overload
    def commit_preview(
        self,
        vm_id: str,
        *,
        delete_detached_disks: bool = False,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def commit_preview(
        self,
        vm_id: str,
        *,
        delete_detached_disks: bool = False,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def commit_preview(
        self,
        vm_id: str,
        *,
        delete_detached_disks: bool = False,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Make the previewed state the VM's state (SPEC §3.3).

        Disks the preview detached become floating, or are deleted with
        ``delete_detached_disks``.
        """
        request = snapshots_pb2.CommitPreviewRequest(
            vm_id=vm_id, delete_detached_disks=delete_detached_disks
        )
        return self._mutate(self._snapshots.CommitPreview, request, wait, options)

    @overload
    def undo_preview(
        self, vm_id: str, *, wait: Literal[True] = ..., **options: Unpack[MutationOptions]
    ) -> Job: ...
    @overload
    def undo_preview(
        self, vm_id: str, *, wait: Literal[False], **options: Unpack[MutationOptions]
    ) -> JobHandle: ...
    def undo_preview(
        self, vm_id: str, *, wait: bool = True, **options: Unpack[MutationOptions]
    ) -> Job | JobHandle:
        """Return the VM to its state before the preview (SPEC §3.4)."""
        request = snapshots_pb2.UndoPreviewRequest(vm_id=vm_id)
        return self._mutate(self._snapshots.UndoPreview, request, wait, options)

    @overload
    def restore_snapshot(
        self,
        vm_id: str,
        *,
        config_snapshot_id: str | None = None,
        disks: Sequence[DiskSelection] = (),
        exclude_disk_ids: Sequence[str] = (),
        restore_memory: bool = False,
        delete_detached_disks: bool = False,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def restore_snapshot(
        self,
        vm_id: str,
        *,
        config_snapshot_id: str | None = None,
        disks: Sequence[DiskSelection] = (),
        exclude_disk_ids: Sequence[str] = (),
        restore_memory: bool = False,
        delete_detached_disks: bool = False,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def restore_snapshot(
        self,
        vm_id: str,
        *,
        config_snapshot_id: str | None = None,
        disks: Sequence[DiskSelection] = (),
        exclude_disk_ids: Sequence[str] = (),
        restore_memory: bool = False,
        delete_detached_disks: bool = False,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Preview and commit in one job (SPEC §3.5); the same selection rules as preview."""
        request = snapshots_pb2.RestoreSnapshotRequest(
            vm_id=vm_id,
            config_snapshot_id=config_snapshot_id or "",
            restore_memory=restore_memory,
            disks=[convert.disk_selection_to_proto(s) for s in disks],
            exclude_disk_ids=list(exclude_disk_ids),
            delete_detached_disks=delete_detached_disks,
        )
        return self._mutate(self._snapshots.RestoreSnapshot, request, wait, options)

    @overload
    def remove_snapshot(
        self,
        vm_id: str,
        snapshot_id: str,
        *,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def remove_snapshot(
        self,
        vm_id: str,
        snapshot_id: str,
        *,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def remove_snapshot(
        self,
        vm_id: str,
        snapshot_id: str,
        *,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Merge a REGULAR snapshot's volumes away and delete it (SPEC §3.6)."""
        request = snapshots_pb2.RemoveSnapshotRequest(vm_id=vm_id, snapshot_id=snapshot_id)
        return self._mutate(self._snapshots.RemoveSnapshot, request, wait, options)

    @overload
    def remove_disk_snapshots(
        self,
        volume_ids: Sequence[str],
        *,
        wait: Literal[True] = ...,
        **options: Unpack[MutationOptions],
    ) -> Job: ...
    @overload
    def remove_disk_snapshots(
        self,
        volume_ids: Sequence[str],
        *,
        wait: Literal[False],
        **options: Unpack[MutationOptions],
    ) -> JobHandle: ...
    def remove_disk_snapshots(
        self,
        volume_ids: Sequence[str],
        *,
        wait: bool = True,
        **options: Unpack[MutationOptions],
    ) -> Job | JobHandle:
        """Remove volumes of one disk from the snapshots owning them (SPEC §3.7)."""
        request = snapshots_pb2.RemoveDiskSnapshotsRequest(volume_ids=list(volume_ids))
        return self._mutate(self._snapshots.RemoveDiskSnapshots, request, wait, options)

    def get_disk_volume_tree(self, disk_id: str) -> VolumeTree:
        """Every volume of a disk (garbage included) and who owns it, oldest first."""
        response = self._call(
            self._snapshots.GetDiskVolumeTree,
            snapshots_pb2.GetDiskVolumeTreeRequest(disk_id=disk_id),
        )
        return convert.volume_tree_from_proto(response)

    # -- jobs -------------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        """One job."""
        response = self._call(self._jobs.GetJob, jobs_pb2.GetJobRequest(job_id=job_id))
        return convert.job_from_proto(response.job)

    def list_jobs(
        self,
        *,
        vm_id: str | None = None,
        state: JobState | None = None,
        kind: JobKind | None = None,
        correlation_id: str | None = None,
        limit: int | None = None,
    ) -> list[Job]:
        """Jobs, newest first, optionally filtered; at most ``limit`` of them."""
        request = jobs_pb2.ListJobsRequest(vm_id=vm_id or "", correlation_id=correlation_id or "")
        if state is not None:
            request.state = convert.enum_to_proto(state)
        if kind is not None:
            request.kind = convert.enum_to_proto(kind)
        jobs = self._pages(self._jobs.ListJobs, request, "jobs", limit)
        return [convert.job_from_proto(j) for j in jobs]

    def watch_job(self, job_id: str) -> Iterator[Job]:
        """Yield the job's current state, then each change until it is terminal."""
        return self._watch(job_id, timeout=None)

    def job_handle(self, job: str | Job) -> JobHandle:
        """A handle on an existing job (by id or as last seen), e.g. to ``wait()`` for it."""
        if isinstance(job, Job):
            return JobHandle(self, job)
        return JobHandle(self, self.get_job(job))

    # -- admin ------------------------------------------------------------------------------

    def check_consistency(
        self,
        *,
        vm_id: str | None = None,
        domain_id: str | None = None,
        verify_images: bool = False,
        timeout: float | None = None,
    ) -> list[Violation]:
        """Run the consistency checker over one VM, one domain, or (default) everything.

        Read-only; an empty list means consistent. ``verify_images`` also runs
        ``qemu-img check`` on every volume (slow: pass a larger ``timeout``).
        """
        if vm_id and domain_id:
            raise ValueError("give vm_id or domain_id, not both")
        scope = admin_pb2.CHECK_SCOPE_ALL
        if vm_id:
            scope = admin_pb2.CHECK_SCOPE_VM
        elif domain_id:
            scope = admin_pb2.CHECK_SCOPE_DOMAIN
        request = admin_pb2.CheckConsistencyRequest(
            scope=scope, entity_id=vm_id or domain_id or "", verify_images=verify_images
        )
        response = self._call(self._admin.CheckConsistency, request, timeout=timeout)
        return [convert.violation_from_proto(v) for v in response.violations]
