"""The merge procedure M(B) (SPEC §3.6), shared by RemoveSnapshot and RemoveDiskSnapshots.

M(B) removes volume ``B`` from its disk's tree so that every other volume reads as before:

    garbage under B     DELETE_VOLUME for each garbage descendant, leaf-first (storage refuses
                        to merge or delete a volume whose file still backs another file)
    other children Ci   REBASE_VOLUME(Ci → C1), C1 being B's oldest child; content-preserving
    B with a child      MERGE_VOLUMES(base=B, top=C1): the survivor keeps C1's id, owner,
                        ``active`` flag and ``created_at``, with parent := B.parent
    B without children  DELETE_VOLUME(B)

Planning happens at admission on ``TreeModel``, an in-memory copy of the disk's tree that
``plan_unit`` updates as M(B) would, so several removals on one disk can be planned in a row.
Every step, with its op_id, is committed before any agent call. The volumes a unit writes or
deletes are LOCKED at admission; their previous statuses are kept in the job's params
(``prior``) and restored when the unit ends.

Execution (``run_unit``) walks a unit's steps in order and applies each DONE step's effect to
the DB in the transaction right after it. Applying is idempotent (it checks what is already
done), so an engine crash between the step and its effect re-applies it on resume; a STARTED
step is re-issued with its op_id and the agent returns the first outcome. The last effect of
a merged unit (B's row deleted, the owner's config drops the disk) is committed together
with the caller's ``on_end`` bookkeeping.

A step that fails for good ends the unit, after one look at storage (ListVolumes):

* a merge that failed after its data work (top already backed by base's parent: only the
  agent's finalize is left) gets one more MERGE_VOLUMES step with a new op_id, committed
  before it is sent (``follow_ups`` in the job's params), which the agent completes;
* a backing change the failed step did make (a rebase whose header was rewritten) is
  recorded, so the DB keeps matching storage;
* ``B`` keeps its previous status when base was not modified (NOT_MERGED), and becomes
  ILLEGAL, still owned, when it was, when its file is gone, or when the outcome is unknown
  (FAILED_ILLEGAL): a merge or delete of B whose agent went away may have changed B, so B is
  never left half-merged and unmarked. Re-running the removal completes it. Rebases already
  done stay done (they preserve content).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine_svc.agents.client import AgentCallError, AgentClient
from engine_svc.commands.admission import plan_step
from engine_svc.config import EngineSettings
from engine_svc.db.models import Job, JobStep, Volume
from engine_svc.db.repos import Repositories
from engine_svc.db.repos.hosts import host_is_up
from engine_svc.db.uow import Database
from engine_svc.domain import DiskOutcome, StepKind, StepState, VolumeStatus, utcnow
from engine_svc.saga.context import JobContext
from engine_svc.saga.steps import StepResult, StepRunner
from engine_svc.snapshot_config import parse, restrict

# Step failures after which the agent may still have run (part of) the operation.
UNKNOWN_OUTCOME_REASONS = frozenset({"AGENT_UNAVAILABLE", "STEP_DEADLINE_EXCEEDED"})


@dataclass
class _Node:
    id: str
    parent_id: str | None
    created_at: datetime
    garbage: bool


class TreeModel:
    """A disk's volumes (garbage included) as planning sees them; ``plan_unit`` updates it."""

    def __init__(self, volumes: Iterable[Volume]) -> None:
        self.nodes = {
            v.id: _Node(v.id, v.parent_id, v.created_at, v.pending_delete) for v in volumes
        }

    def children(self, volume_id: str, *, garbage: bool = False) -> list[str]:
        """Live (or garbage) children, oldest first (ties by id)."""
        found = [
            n for n in self.nodes.values() if n.parent_id == volume_id and n.garbage == garbage
        ]
        return [n.id for n in sorted(found, key=lambda n: (n.created_at, n.id))]

    def garbage_under(self, volume_id: str) -> list[str]:
        """Garbage descendants reachable through garbage children, every child before its parent.

        A garbage volume has no live child (INV-12), so these subtrees are garbage throughout.
        """
        out: list[str] = []

        def visit(node_id: str) -> None:
            for child in self.children(node_id, garbage=True):
                visit(child)
            out.append(node_id)

        for child in self.children(volume_id, garbage=True):
            visit(child)
        return out

    def depth(self, volume_id: str) -> int:
        """Number of ancestors of a volume."""
        n, node, seen = 0, self.nodes.get(volume_id), set()
        while node is not None and node.parent_id is not None and node.id not in seen:
            seen.add(node.id)
            node = self.nodes.get(node.parent_id)
            n += 1
        return n


@dataclass(frozen=True)
class MergeUnit:
    """One planned M(B): the steps of removing ``base_id`` from its disk (job params)."""

    disk_id: str
    disk_alias: str
    base_id: str
    owner_id: str
    survivor_id: str | None
    seqs: tuple[int, ...]
    locked: tuple[str, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in ``job.params``."""
        return {
            "disk_id": self.disk_id,
            "disk_alias": self.disk_alias,
            "base_id": self.base_id,
            "owner_id": self.owner_id,
            "survivor_id": self.survivor_id,
            "seqs": list(self.seqs),
            "locked": list(self.locked),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MergeUnit:
        """The unit stored by ``to_json``."""
        return cls(
            disk_id=data["disk_id"],
            disk_alias=data["disk_alias"],
            base_id=data["base_id"],
            owner_id=data["owner_id"],
            survivor_id=data["survivor_id"],
            seqs=tuple(int(s) for s in data["seqs"]),
            locked=tuple(data["locked"]),
        )


def plan_unit(
    job: Job,
    model: TreeModel,
    base: Volume,
    *,
    owner_id: str,
    disk_alias: str,
    first_seq: int,
    host_id: str,
) -> tuple[MergeUnit, list[JobStep]]:
    """Plan M(base) on the model (and apply it there); returns the unit and its steps."""
    steps: list[JobStep] = []

    def add(kind: StepKind, volume_ids: list[str], params: dict[str, Any] | None = None) -> None:
        steps.append(
            plan_step(
                job,
                first_seq + len(steps),
                kind,
                host_id=host_id,
                domain_id=base.domain_id,
                disk_id=base.disk_id,
                volume_ids=volume_ids,
                params=params,
            )
        )

    garbage = model.garbage_under(base.id)
    for volume_id in garbage:
        add(StepKind.DELETE_VOLUME, [volume_id])
    children = model.children(base.id)
    base_parent = model.nodes[base.id].parent_id
    survivor = children[0] if children else None
    for child in children[1:]:
        add(StepKind.REBASE_VOLUME, [child], {"new_parent_id": survivor})
    if survivor is None:
        add(StepKind.DELETE_VOLUME, [base.id])
    else:
        add(StepKind.MERGE_VOLUMES, [base.id, survivor], {"base_parent_id": base_parent})

    for volume_id in garbage:
        del model.nodes[volume_id]
    for child in children[1:]:
        model.nodes[child].parent_id = survivor
    if survivor is not None:
        model.nodes[survivor].parent_id = base_parent
    del model.nodes[base.id]
    unit = MergeUnit(
        disk_id=base.disk_id,
        disk_alias=disk_alias,
        base_id=base.id,
        owner_id=owner_id,
        survivor_id=survivor,
        seqs=tuple(s.seq for s in steps),
        locked=tuple([base.id, *children]),
    )
    return unit, steps


def lock_volumes(
    tx: Repositories, volume_ids: Iterable[str], prior: dict[str, str]
) -> dict[str, str]:
    """Set volumes LOCKED at admission, recording each one's previous status in ``prior``."""
    for volume in tx.volumes.get_many(volume_ids).values():
        if volume.id not in prior:
            prior[volume.id] = volume.status
        volume.status = VolumeStatus.LOCKED
    return prior


def release_volumes(tx: Repositories, volume_ids: Iterable[str], prior: Mapping[str, str]) -> None:
    """Give every still LOCKED volume among ``volume_ids`` its previous status back."""
    for volume in tx.volumes.get_many(volume_ids).values():
        if volume.status == VolumeStatus.LOCKED:
            volume.status = prior.get(volume.id, VolumeStatus.OK)


@dataclass(frozen=True)
class UnitEnd:
    """How a unit ended: MERGED, NOT_MERGED or FAILED_ILLEGAL, with the failed step's error."""

    outcome: DiskOutcome
    error: dict[str, Any] | None = None


# Called in the transaction that ends a unit: (tx, job, unit, end).
UnitEnded = Callable[[Repositories, Job, MergeUnit, UnitEnd], None]


def run_unit(
    ctx: JobContext,
    unit: MergeUnit,
    *,
    deadline: datetime | None,
    prior: Mapping[str, str],
    on_end: UnitEnded,
) -> StepResult:
    """Drive one M(B) from whatever its steps record to its end (resumable at any point)."""
    for planned in unit.seqs:
        seq = planned
        while True:
            with ctx.tx() as (tx, job):
                state = StepState(tx.jobs.step(job.id, seq).state)
            if state in (StepState.PLANNED, StepState.STARTED):
                StepRunner(ctx).run(seq, deadline=deadline)
            with ctx.tx() as (tx, job):
                step = tx.jobs.step(job.id, seq)
                if step.state == StepState.DONE:
                    if _apply(tx, unit, step):
                        on_end(tx, job, unit, UnitEnd(DiskOutcome.MERGED))
                        return StepResult(True)
                    break
                follow_up = job.params.get("follow_ups", {}).get(str(seq))
                failed = _FailedStep.of(step)
            if follow_up is not None:
                seq = int(follow_up)
                continue
            on_storage = storage_parents(ctx, failed.domain_id, unit.disk_id, failed.host_id)
            if seq == planned and failed.pull_finished(on_storage):
                seq = _plan_follow_up(ctx, seq)
                continue
            with ctx.tx() as (tx, job):
                step = tx.jobs.step(job.id, seq)
                end = _settle_failure(tx, unit, step, prior, on_storage)
                on_end(tx, job, unit, end)
                return StepResult(False, error=end.error)
    raise AssertionError(f"unit of volume {unit.base_id} ended without its final step")


@dataclass(frozen=True)
class _FailedStep:
    kind: StepKind
    volume_ids: tuple[str, ...]
    base_parent_id: str | None
    domain_id: str
    host_id: str | None

    @classmethod
    def of(cls, step: JobStep) -> _FailedStep:
        return cls(
            StepKind(step.kind),
            tuple(step.volume_ids),
            step.params.get("base_parent_id"),
            step.domain_id or "",
            step.host_id,
        )

    def pull_finished(self, on_storage: Mapping[str, str | None] | None) -> bool:
        """A merge failed after its data work: top no longer needs base on storage.

        Only the agent's finalize (and base's deletion) is left, which a new operation on
        the same volumes completes (SPEC §6.4: the agent recognises the state).
        """
        if self.kind is not StepKind.MERGE_VOLUMES or on_storage is None:
            return False
        top = self.volume_ids[1]
        return top in on_storage and on_storage[top] == self.base_parent_id


def _plan_follow_up(ctx: JobContext, seq: int) -> int:
    """Commit one more attempt of step ``seq`` under a new op_id; returns its seq."""
    with ctx.tx() as (tx, job):
        follow_ups = dict(job.params.get("follow_ups", {}))
        if str(seq) in follow_ups:
            return int(follow_ups[str(seq)])
        original = tx.jobs.step(job.id, seq)
        new_seq = max(s.seq for s in tx.jobs.steps(job.id)) + 1
        tx.jobs.add_step(
            JobStep(
                job_id=job.id,
                seq=new_seq,
                kind=original.kind,
                disk_id=original.disk_id,
                domain_id=original.domain_id,
                host_id=original.host_id,
                volume_ids=list(original.volume_ids),
                params=dict(original.params),
                op_id=f"{job.id}:{new_seq}",
                state=StepState.PLANNED,
                attempts=0,
                progress=0,
                error=None,
                compensates=None,
                result=None,
                started_at=None,
                ended_at=None,
            )
        )
        job.params = {**job.params, "follow_ups": {**follow_ups, str(seq): new_seq}}
        return new_seq


def storage_parents(
    ctx: JobContext, domain_id: str, disk_id: str, preferred: str | None
) -> dict[str, str | None] | None:
    """Volume id → backing volume id of a disk's files as the agent sees them (None: unknown)."""
    with ctx.tx() as (tx, _job):
        host = ctx.up_host_for(tx, domain_id, preferred)
        address = host.address if host is not None else None
    if address is None:
        return None
    try:
        listing = ctx.agents.list_volumes(address, domain_id, disk_id)
    except AgentCallError:
        return None
    return {v.volume_id: v.parent_id for v in listing.volumes}


def _apply(tx: Repositories, unit: MergeUnit, step: JobStep) -> bool:
    """Apply a DONE step's effect (idempotent); True for the unit's final step."""
    kind = StepKind(step.kind)
    volume_id = step.volume_ids[0]
    result = step.result or {}
    if kind is StepKind.DELETE_VOLUME and volume_id != unit.base_id:
        garbage = tx.volumes.get(volume_id)
        if garbage is not None and garbage.pending_delete:
            tx.volumes.delete(garbage)
        return False
    if kind is StepKind.REBASE_VOLUME:
        child = tx.volumes.get(volume_id)
        if child is not None:
            child.parent_id = step.params.get("new_parent_id")
            if result.get("volume"):
                child.actual_size = int(result["volume"]["actual_size"])
        return False
    base = tx.volumes.get(unit.base_id)
    if base is None:
        return True  # applied before a crash
    if kind is StepKind.MERGE_VOLUMES:
        survivor = tx.volumes.get(step.volume_ids[1])
        assert survivor is not None, f"survivor {step.volume_ids[1]} of a merge is missing"
        survivor.parent_id = step.params.get("base_parent_id")
        info = result.get("volume")
        if info:
            survivor.format = info["format"] or survivor.format
            survivor.virtual_size = int(info["virtual_size"]) or survivor.virtual_size
            survivor.actual_size = int(info["actual_size"])
        elif result.get("direction") == "COMMIT":
            survivor.format = base.format
    tx.volumes.delete(base)
    tx.session.flush()
    drop_disk_from_owner(tx, unit.owner_id, unit.disk_id)
    return True


def drop_disk_from_owner(tx: Repositories, snapshot_id: str, disk_id: str) -> None:
    """The owner's configuration drops the disk, under a row lock on the snapshot."""
    owner = tx.snapshots.get(snapshot_id, for_update=True)
    if owner is None or owner.config is None:
        return
    listed = [d["disk_id"] for d in parse(owner.config)["disks"]]
    if disk_id in listed:
        owner.config = restrict(owner.config, [d for d in listed if d != disk_id])


def base_may_be_modified(unit: MergeUnit, step: JobStep) -> bool:
    """Whether a failed step may have changed B's data (unknown counts as yes)."""
    kind = StepKind(step.kind)
    unknown = (step.error or {}).get("reason") in UNKNOWN_OUTCOME_REASONS
    if kind is StepKind.MERGE_VOLUMES:
        result = step.result or {}
        if "base_modified" in result:
            return bool(result["base_modified"])
        return unknown
    if kind is StepKind.DELETE_VOLUME and step.volume_ids[0] == unit.base_id:
        return unknown
    return False


def _settle_failure(
    tx: Repositories,
    unit: MergeUnit,
    step: JobStep,
    prior: Mapping[str, str],
    on_storage: Mapping[str, str | None] | None,
) -> UnitEnd:
    _reconcile(tx, step, on_storage)
    modified = base_may_be_modified(unit, step)
    if on_storage is not None and unit.base_id not in on_storage:
        modified = True  # base's file is gone: its own point in time is lost
    base = tx.volumes.get(unit.base_id)
    was = prior.get(unit.base_id, VolumeStatus.OK)
    if base is not None and base.status == VolumeStatus.LOCKED:
        base.status = VolumeStatus.ILLEGAL if modified else was
    elif base is not None:
        # Settled before a crash; what was decided then stands (never downgraded).
        modified = modified or (base.status == VolumeStatus.ILLEGAL and was != VolumeStatus.ILLEGAL)
    outcome = DiskOutcome.FAILED_ILLEGAL if modified else DiskOutcome.NOT_MERGED
    return UnitEnd(outcome, dict(step.error or {}))


def _reconcile(
    tx: Repositories, step: JobStep, on_storage: Mapping[str, str | None] | None
) -> None:
    """Record a backing change the failed step did make on storage.

    A rebase can fail after qemu-img rewrote the header; a PULL merge (whose follow-up also
    failed) after the child was rebased onto base's parent. The content is intact and, for a
    base that has a parent, the tree stays valid (base, unchanged, just lost its child), so
    the DB follows storage. A root base would leave two roots, and a merge whose base file is
    gone is past repair here: both are left to the retry, which completes the merge with a
    new operation.
    """
    if on_storage is None:
        return
    kind = StepKind(step.kind)
    if kind is StepKind.REBASE_VOLUME:
        volume_id, target = step.volume_ids[0], step.params.get("new_parent_id")
    elif kind is StepKind.MERGE_VOLUMES and step.volume_ids[0] in on_storage:
        volume_id, target = step.volume_ids[1], step.params.get("base_parent_id")
        if target is None:
            return  # a root base: two roots would not be a tree; the retry finishes it
    else:
        return
    volume = tx.volumes.get(volume_id)
    if volume is not None and volume_id in on_storage and on_storage[volume_id] == target:
        volume.parent_id = target


def measured_sizes(
    db: Database, agents: AgentClient, settings: EngineSettings, volume_ids: Iterable[str]
) -> dict[str, int]:
    """Allocated bytes of volumes as their agents measure them now (best effort).

    The DB keeps the last size an agent reported, which is stale once a guest wrote to a
    volume, so the space check asks the agents first. A volume whose agent cannot answer is
    left out, and the caller falls back to the recorded size.
    """
    wanted = set(volume_ids)
    now = utcnow()
    with db.transaction() as tx:
        volumes = tx.volumes.get_many(wanted).values()
        disks = sorted({(v.domain_id, v.disk_id) for v in volumes})
        addresses: dict[str, str] = {}
        for domain_id, _disk_id in disks:
            for _hd, host in tx.hosts.serving(domain_id):
                if host_is_up(host, now, settings.heartbeat_interval):
                    addresses[domain_id] = host.address
                    break
    sizes: dict[str, int] = {}
    for domain_id, disk_id in disks:
        address = addresses.get(domain_id)
        if address is None:
            continue
        try:
            listing = agents.list_volumes(address, domain_id, disk_id, recorded_only=True)
        except AgentCallError:
            continue
        sizes.update({v.volume_id: v.actual_size for v in listing.volumes if v.volume_id in wanted})
    return sizes
