"""Exit codes, CLI-side errors, and the one place exceptions become messages and exit codes.

=====  ===========  ================================================================
code   name         when
=====  ===========  ================================================================
0      OK           success (a SUCCEEDED_PARTIAL job too; the output says what failed)
1      FAILURE      a job FAILED, a wait timed out, violations found, any other error
2      INVALID      bad arguments or values, an ambiguous name (also click usage errors)
3      NOT_FOUND    a VM, disk, snapshot, host, domain or job does not exist
4      CONFLICT     a name or lock conflict, or a state that forbids the operation
5      UNAVAILABLE  the engine cannot be reached or is shutting down
=====  ===========  ================================================================
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

from disksnap import errors
from disksnap._types import Job
from disksnap.cli._render import job_json


class ExitCode(enum.IntEnum):
    """The process exit codes of ``disksnap``."""

    OK = 0
    FAILURE = 1
    INVALID = 2
    NOT_FOUND = 3
    CONFLICT = 4
    UNAVAILABLE = 5


class CliError(Exception):
    """An error found by the CLI itself (bad value, unknown or ambiguous name)."""

    def __init__(
        self,
        reason: str,
        message: str,
        exit_code: ExitCode,
        *,
        metadata: Mapping[str, str] | None = None,
        candidates: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code
        self.metadata = dict(metadata or {})
        self.candidates = list(candidates)


def invalid(message: str, **metadata: str) -> CliError:
    """A bad argument value (exit 2)."""
    return CliError("INVALID_VALUE", message, ExitCode.INVALID, metadata=metadata)


def not_found(kind: str, ref: str, scope: str = "") -> CliError:
    """No entity matches a name or id (exit 3)."""
    where = f" {scope}" if scope else ""
    return CliError(
        "NOT_FOUND", f"no {kind}{where} named {ref!r}", ExitCode.NOT_FOUND, metadata={"ref": ref}
    )


def ambiguous(kind: str, ref: str, candidates: Sequence[str], scope: str = "") -> CliError:
    """A name matches several entities (exit 2); ``candidates`` describes each."""
    where = f" {scope}" if scope else ""
    lines = "\n".join(f"  {c}" for c in candidates)
    return CliError(
        "AMBIGUOUS_NAME",
        f"{ref!r} is ambiguous: {len(candidates)} {kind}s{where} match; use an id:\n{lines}",
        ExitCode.INVALID,
        metadata={"ref": ref},
        candidates=candidates,
    )


def exit_code_for(err: BaseException) -> ExitCode:
    """The exit code for an exception."""
    if isinstance(err, CliError):
        return err.exit_code
    if isinstance(err, errors.NotFound):
        return ExitCode.NOT_FOUND
    if isinstance(err, errors.InvalidArgument):
        return ExitCode.INVALID
    if isinstance(err, errors.Conflict | errors.PreconditionFailed):
        return ExitCode.CONFLICT
    if isinstance(err, errors.Unavailable):
        return ExitCode.UNAVAILABLE
    return ExitCode.FAILURE


_SENTENCES: dict[str, str] = {
    "INVALID_FIELD": "The value of {field} is not valid: {detail}.",
    "DESCRIPTION_EMPTY": "The description must not be empty.",
    "DESCRIPTION_INVALID": "The description contains characters that are not printable.",
    "DESCRIPTION_TOO_LONG": "The description is longer than {max_length} characters.",
    "CORRUPTED_VM_SNAPSHOT_ID": "The snapshot id is the nil UUID.",
    "DUPLICATE_DISK_IDS": "A disk is named more than once: {disk_ids}.",
    "PREVIEW_DISK_SELECTION_INCOMPLETE": (
        "A custom preview must select or exclude every attached disk; missing: {disk_aliases}."
    ),
    "VM_NOT_EXIST": "The VM {vm_id} does not exist.",
    "VM_SNAPSHOT_DOES_NOT_EXIST": "The VM has no snapshot {snapshot_id}.",
    "DISKS_NOT_EXIST": "These disks do not exist: {disk_ids}.",
    "DISK_SNAPSHOTS_NOT_EXIST": "The requested disk snapshot does not exist.",
    "STORAGE_DOMAIN_NOT_EXIST": "The storage domain {domain_id} does not exist.",
    "HOST_NOT_EXIST": "The host {host_id} does not exist.",
    "JOB_NOT_EXIST": "The job {job_id} does not exist.",
    "NAME_ALREADY_USED": "The name {name} is already used by another {entity}.",
    "REQUEST_ID_REUSED": "The request id was already used for a different request.",
    "SNAPSHOT_IS_BEING_TAKEN_FOR_VM": "A snapshot is being taken of {vm_name}; try again later.",
    "VM_IS_DURING_SNAPSHOT": "{vm_name} is busy with a snapshot operation; try again later.",
    "VM_IS_LOCKED": "{vm_name} is locked by another operation; try again later.",
    "DISKS_LOCKED": "These disks are locked by another operation: {disk_aliases}.",
    "VM_IN_PREVIEW": "{vm_name} is in preview; commit or undo the preview first.",
    "VM_SNAPSHOT_NOT_IN_PREVIEW": "The VM is not in preview.",
    "VM_IS_NOT_DOWN": "{vm_name} must be down (it is {run_state}); stop it first.",
    "VM_SNAPSHOT_TYPE_NOT_ALLOWED": "A {snapshot_type} snapshot cannot be used here.",
    "CANNOT_PREVIEW_ACTIVE_SNAPSHOT": "Nothing to preview: the selection is the current state.",
    "DISKS_NOT_ATTACHED_TO_VM": "These disks are not attached to {vm_name}: {disk_aliases}.",
    "DISK_SNAPSHOT_NOT_SUPPORTED": "These disks cannot be snapshotted: {disk_aliases}.",
    "DISKS_ILLEGAL": "These disks have illegal volumes: {disk_aliases}.",
    "HOST_NOT_UP": "The host {host_name} is down.",
    "STORAGE_DOMAIN_STATUS_ILLEGAL": "The storage domain {domain_name} is {status}.",
    "DISK_SPACE_LOW_ON_STORAGE_DOMAIN": (
        "Not enough free space on {domain_name}: {required_bytes} bytes needed, {free_bytes} free."
    ),
    "MEMORY_REQUIRES_RUNNING_VM": "Memory can only be saved while the VM is up.",
    "HOST_CANNOT_SAVE_MEMORY": "The host {host_name} cannot save memory state.",
    "MEMORY_NOT_AVAILABLE": "The snapshot has no saved memory.",
    "DISK_BOOT_IN_USE": "{vm_name} already has a bootable disk.",
    "DISK_ALREADY_ATTACHED": "The disk is already attached to a VM.",
    "CANNOT_DETACH_DISK_WITH_SNAPSHOT": "A disk with snapshots cannot be detached.",
    "UNAVAILABLE": "The engine at {engine} cannot be reached. Is it running?",
    "DEADLINE_EXCEEDED": "The engine at {engine} did not answer in time.",
    "ENGINE_SHUTTING_DOWN": "The engine is shutting down; try again.",
    "DATABASE_UNAVAILABLE": "The engine cannot reach its database; try again.",
    "UNAUTHENTICATED": "Missing or invalid token (--token / DISKSNAP_TOKEN).",
    "PERMISSION_DENIED": "Your token does not allow this operation.",
    "UNIMPLEMENTED": "Not available yet in this engine.",
}


class _Defaulting(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return "?"


def describe(err: BaseException, *, engine: str = "") -> str:
    """A human sentence for an error."""
    if isinstance(err, errors.ApiError):
        template = _SENTENCES.get(err.reason)
        if template is None:
            return err.message
        values = _Defaulting(err.metadata)
        values.setdefault("engine", engine)
        for key in ("vm_name", "disk_aliases", "domain_name", "host_name"):
            fallback = {
                "vm_name": "the VM",
                "disk_aliases": err.metadata.get("disk_ids", "?"),
                "domain_name": err.metadata.get("domain_id", "the domain"),
                "host_name": err.metadata.get("host_id", "the host"),
            }[key]
            values.setdefault(key, fallback)
        text = template.format_map(values)
        return text[:-1] if text.endswith("..") else text
    if isinstance(err, errors.JobFailed):
        job = err.job
        message = job.error.message if job.error else "no error recorded"
        return f"The {job.kind.value} job failed: {message}"
    if isinstance(err, CliError):
        return err.message
    return str(err)


def reason_of(err: BaseException) -> str:
    """The reason code shown with an error."""
    if isinstance(err, errors.ApiError | errors.JobFailed | CliError):
        return err.reason
    if isinstance(err, errors.WaitTimeout):
        return "WAIT_TIMEOUT"
    return type(err).__name__


def error_document(err: BaseException, *, engine: str = "") -> dict[str, object]:
    """The JSON error document printed on stderr with ``--output json``."""
    metadata: Mapping[str, str] = {}
    if isinstance(err, errors.ApiError | CliError):
        metadata = err.metadata
    doc: dict[str, object] = {
        "reason": reason_of(err),
        "message": describe(err, engine=engine),
        "metadata": dict(metadata),
        "exit_code": int(exit_code_for(err)),
    }
    if isinstance(err, CliError) and err.candidates:
        doc["candidates"] = err.candidates
    job: Job | None = getattr(err, "job", None)
    if isinstance(job, Job):
        doc["job"] = job_json(job)
    return {"error": doc}
