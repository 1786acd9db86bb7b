"""Bad input is refused with the right code and reason, and nothing changes on disk (SPEC §6.2).

Every case snapshots the agent's root (and, where a symlink points out of it, the outside
directory) with sizes, mtimes and inodes before the request and compares after it.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from disksnap.agent.v1 import agent_pb2
from support import qemu
from support.agent import (
    COW,
    RAW,
    AgentDriver,
    expect_done,
    expect_failure,
)
from support.content import MiB
from support.fs import assert_unchanged, tree_snapshot
from support.ids import NIL_UUID, new_op_id, new_uuid
from support.processes import AgentProcess

INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
TiB = 1024 * 1024 * MiB
LONG_OPS = {"MergeVolumes", "RebaseVolume"}


@dataclass
class World:
    """A fresh domain with disk A (a0 <- a1 <- a2) and disk B (b0)."""

    agent: AgentProcess
    driver: AgentDriver
    disk: str
    a0: str
    a1: str
    a2: str
    disk_b: str
    b0: str
    outside: Path

    @property
    def domain(self) -> str:
        return self.driver.domain_id

    def snapshot(self) -> dict[str, Any]:
        return tree_snapshot(self.agent.root, self.outside)

    def unchanged(self, before: dict[str, Any]) -> None:
        assert_unchanged(before, self.agent.root, self.outside)


@pytest.fixture
def world(shared_driver: AgentDriver, tmp_path: Path) -> World:
    drv = shared_driver
    disk, a0, a1, a2 = new_uuid(), new_uuid(), new_uuid(), new_uuid()
    expect_done(drv.create_base(disk, a0, size=8 * MiB))
    expect_done(drv.create_overlay(disk, a0, a1))
    expect_done(drv.create_overlay(disk, a1, a2))
    disk_b, b0 = new_uuid(), new_uuid()
    expect_done(drv.create_base(disk_b, b0, size=8 * MiB))
    outside = tmp_path / "outside"
    outside.mkdir()
    return World(drv.agent, drv, disk, a0, a1, a2, disk_b, b0, outside)


# -- ids ------------------------------------------------------------------------------------

U = "3f2b8c1e-9a4d-4e6f-8b7a-1c2d3e4f5a6b"
BAD_IDS = [
    "not-a-uuid",
    U.upper(),
    NIL_UUID,
    f"../{U}",
    "..",
    "/etc",
    f"/{U}",
    f"{U}/../{U}",
    f"{U}/",
    "",
    f"{U}\n",
    U[:-1],
    f" {U}",
    U.replace("-", ""),
]
BAD_OP_IDS = [
    "not-a-uuid",
    "",
    f"../{U}",
    "/tmp/op",
    f"{U}:abc",
    f"{U}:undo:1",
    f"{U}:",
    U.upper(),
    NIL_UUID,
]


def request_templates(w: World) -> dict[str, tuple[type[Any], dict[str, Any]]]:
    """A valid request per RPC; tests replace one field by a bad value."""
    d = w.domain
    return {
        "InitDomain": (agent_pb2.InitDomainRequest, {"domain_id": d, "name": "x"}),
        "CreateVolume": (
            agent_pb2.CreateVolumeRequest,
            {"domain_id": d, "disk_id": w.disk, "volume_id": new_uuid(), "parent_volume_id": w.a2},
        ),
        "DeleteVolume": (
            agent_pb2.DeleteVolumeRequest,
            {"domain_id": d, "disk_id": w.disk, "volume_id": new_uuid()},
        ),
        "MergeVolumes": (
            agent_pb2.MergeVolumesRequest,
            {
                "domain_id": d,
                "disk_id": w.disk,
                "base_id": w.a1,
                "top_id": w.a2,
                "base_parent_id": w.a0,
                "survivor_id": w.a2,
            },
        ),
        "RebaseVolume": (
            agent_pb2.RebaseVolumeRequest,
            {"domain_id": d, "disk_id": w.disk, "volume_id": w.a2, "new_parent_id": w.a0},
        ),
        "GetVolumeInfo": (
            agent_pb2.GetVolumeInfoRequest,
            {"domain_id": d, "disk_id": w.disk, "volume_id": w.a1},
        ),
        "ListVolumes": (agent_pb2.ListVolumesRequest, {"domain_id": d, "disk_id": w.disk}),
        "VerifyVolume": (
            agent_pb2.VerifyVolumeRequest,
            {"domain_id": d, "disk_id": w.disk, "volume_id": w.a1},
        ),
        "DeleteMemoryState": (
            agent_pb2.DeleteMemoryStateRequest,
            {"domain_id": d, "memory_id": new_uuid()},
        ),
    }


HAS_OP_ID = {"InitDomain", "CreateVolume", "DeleteVolume", "MergeVolumes", "RebaseVolume"}
HAS_OP_ID |= {"VerifyVolume", "DeleteMemoryState"}
# Fields where "" is meaningful (no parent) rather than invalid.
EMPTY_ALLOWED = {("MergeVolumes", "base_parent_id"), ("RebaseVolume", "new_parent_id")}
ID_FIELDS = [
    ("InitDomain", "domain_id"),
    ("CreateVolume", "domain_id"),
    ("CreateVolume", "disk_id"),
    ("CreateVolume", "volume_id"),
    ("CreateVolume", "parent_volume_id"),
    ("DeleteVolume", "domain_id"),
    ("DeleteVolume", "disk_id"),
    ("DeleteVolume", "volume_id"),
    ("MergeVolumes", "domain_id"),
    ("MergeVolumes", "disk_id"),
    ("MergeVolumes", "base_id"),
    ("MergeVolumes", "top_id"),
    ("MergeVolumes", "base_parent_id"),
    ("MergeVolumes", "survivor_id"),
    ("RebaseVolume", "domain_id"),
    ("RebaseVolume", "disk_id"),
    ("RebaseVolume", "volume_id"),
    ("RebaseVolume", "new_parent_id"),
    ("GetVolumeInfo", "domain_id"),
    ("GetVolumeInfo", "disk_id"),
    ("GetVolumeInfo", "volume_id"),
    ("ListVolumes", "domain_id"),
    ("ListVolumes", "disk_id"),
    ("VerifyVolume", "domain_id"),
    ("VerifyVolume", "disk_id"),
    ("VerifyVolume", "volume_id"),
    ("DeleteMemoryState", "domain_id"),
    ("DeleteMemoryState", "memory_id"),
]


def call_with(w: World, rpc: str, **override: Any) -> Callable[[], Any]:
    cls, fields = request_templates(w)[rpc]
    fields = dict(fields)
    if rpc in HAS_OP_ID:
        fields["op_id"] = new_op_id()
    fields.update(override)
    request = cls(**fields)
    return lambda: getattr(w.agent.stub(), rpc)(request, timeout=30)


def refuse_all(
    w: World,
    rpc: str,
    field: str,
    values: list[str],
    codes: tuple[grpc.StatusCode, ...],
    reasons: tuple[str, ...],
) -> None:
    problems: list[str] = []
    for value in values:
        before = w.snapshot()
        try:
            expect_failure(
                call_with(w, rpc, **{field: value}),
                codes,
                reasons,
                driver=w.driver,
                status_only=rpc not in LONG_OPS,
            )
            w.unchanged(before)
        except AssertionError as exc:
            problems.append(f"{rpc}.{field}={value!r}: {exc}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("rpc", "field"), ID_FIELDS, ids=[f"{r}.{f}" for r, f in ID_FIELDS])
def test_malformed_ids_are_refused(world: World, rpc: str, field: str) -> None:
    values = [v for v in BAD_IDS if v or (rpc, field) not in EMPTY_ALLOWED]
    reasons: tuple[str, ...] = ("INVALID_ID",)
    if field == "survivor_id":
        reasons += ("UNSUPPORTED_SURVIVOR",)  # either check may come first
    refuse_all(world, rpc, field, values, (INVALID_ARGUMENT,), reasons)


@pytest.mark.parametrize("rpc", sorted(HAS_OP_ID))
def test_malformed_op_ids_are_refused(world: World, rpc: str) -> None:
    refuse_all(
        world, rpc, "op_id", BAD_OP_IDS, (INVALID_ARGUMENT,), ("INVALID_FIELD", "INVALID_ID")
    )


def test_well_formed_op_id_variants_are_accepted(world: World) -> None:
    for op_id in (f"{new_uuid()}:7", f"{new_uuid()}:undo", f"{new_uuid()}:12:undo", new_uuid()):
        op = expect_done(world.driver.create_base(world.disk_b, new_uuid(), size=MiB, op_id=op_id))
        assert op.op_id == op_id


def test_get_operation_of_unknown_or_malformed_op_id(world: World) -> None:
    stub = world.agent.stub()
    expect_failure(
        lambda: stub.GetOperation(agent_pb2.GetOperationRequest(op_id=new_op_id()), timeout=10),
        NOT_FOUND,
        "OPERATION_NOT_FOUND",
        status_only=True,
    )
    for bad in ("../../etc/passwd", "/etc/passwd", "x"):
        req = agent_pb2.GetOperationRequest(op_id=bad)
        expect_failure(
            lambda req=req: stub.GetOperation(req, timeout=10),  # type: ignore[misc]
            (INVALID_ARGUMENT, NOT_FOUND),
            ("INVALID_FIELD", "INVALID_ID", "OPERATION_NOT_FOUND"),
            status_only=True,
        )


# -- sizes and formats ------------------------------------------------------------------------

BAD_SIZES = [-1, -512, 0, 511, 512, MiB - 512, MiB + 1, MiB + 100, 64 * TiB + 512, 64 * TiB + 1]
BAD_SIZES += [2**63 - 1]


@pytest.mark.parametrize("size", BAD_SIZES)
@pytest.mark.parametrize("fmt", [COW, RAW], ids=["qcow2", "raw"])
def test_bad_sizes_are_refused(world: World, size: int, fmt: int) -> None:
    before = world.snapshot()
    expect_failure(
        lambda: world.driver.create_base(world.disk, new_uuid(), size=size, fmt=fmt),
        INVALID_ARGUMENT,
        "INVALID_FIELD",
        status_only=True,
    )
    world.unchanged(before)


def test_bad_formats_and_missing_source_are_refused(world: World) -> None:
    d = world.domain
    requests = [
        agent_pb2.CreateVolumeRequest(
            op_id=new_op_id(),
            domain_id=d,
            disk_id=world.disk,
            volume_id=new_uuid(),
            base=agent_pb2.BaseVolumeSpec(virtual_size=8 * MiB, format=fmt),  # type: ignore[arg-type]
        )
        for fmt in (agent_pb2.VOLUME_FORMAT_UNSPECIFIED, 7)
    ]
    requests.append(
        agent_pb2.CreateVolumeRequest(
            op_id=new_op_id(), domain_id=d, disk_id=world.disk, volume_id=new_uuid()
        )
    )
    before = world.snapshot()
    for req in requests:
        expect_failure(
            lambda req=req: world.agent.stub().CreateVolume(req, timeout=30),  # type: ignore[misc]
            INVALID_ARGUMENT,
            "INVALID_FIELD",
            status_only=True,
        )
    world.unchanged(before)


def test_size_limits_are_inclusive(world: World) -> None:
    disk = new_uuid()
    for size, fmt in ((MiB, RAW), (MiB, COW), (64 * TiB, COW)):
        vol = new_uuid()
        op = expect_done(world.driver.create_base(disk, vol, size=size, fmt=fmt))
        assert op.result.volume.virtual_size == size
        assert qemu.info(world.driver.volume_path(disk, vol))["virtual-size"] == size


# -- existence and chain checks ---------------------------------------------------------------


def test_unknown_domain_is_refused(world: World) -> None:
    other = AgentDriver(world.agent, new_uuid())
    w = world
    calls = [
        lambda: other.create_base(w.disk, new_uuid(), size=8 * MiB),
        lambda: other.create_overlay(w.disk, w.a2, new_uuid()),
        lambda: other.list_volumes(w.disk),
        lambda: other.volume_info(w.disk, w.a1),
        lambda: other.verify(w.disk, w.a1),
    ]
    before = w.snapshot()
    for call in calls:
        expect_failure(call, NOT_FOUND, "DOMAIN_NOT_FOUND", status_only=True)
    expect_failure(
        lambda: other.start_merge(other.merge_request(w.disk, w.a1, w.a2, w.a0)),
        NOT_FOUND,
        "DOMAIN_NOT_FOUND",
        driver=other,
    )
    req = other.rebase_request(w.disk, w.a2, w.a0)
    expect_failure(
        lambda: w.agent.stub().RebaseVolume(req, timeout=30),
        NOT_FOUND,
        "DOMAIN_NOT_FOUND",
        driver=other,
    )
    w.unchanged(before)
    assert not (w.agent.root / other.domain_id).exists()


def test_parent_must_exist_on_the_same_disk(world: World) -> None:
    w = world
    before = w.snapshot()
    for parent in (w.b0, new_uuid()):
        expect_failure(
            lambda parent=parent: w.driver.create_overlay(w.disk, parent, new_uuid()),  # type: ignore[misc]
            NOT_FOUND,
            "PARENT_NOT_FOUND",
            status_only=True,
        )
        req = w.driver.rebase_request(w.disk, w.a2, parent)
        expect_failure(
            lambda req=req: w.agent.stub().RebaseVolume(req, timeout=30),  # type: ignore[misc]
            NOT_FOUND,
            ("PARENT_NOT_FOUND", "VOLUME_NOT_FOUND"),
            driver=w.driver,
        )
    w.unchanged(before)


def test_missing_volumes_are_refused(world: World) -> None:
    w = world
    missing = new_uuid()
    before = w.snapshot()
    expect_failure(
        lambda: w.driver.volume_info(w.disk, missing),
        NOT_FOUND,
        "VOLUME_NOT_FOUND",
        status_only=True,
    )
    expect_failure(
        lambda: w.driver.verify(w.disk, missing), NOT_FOUND, "VOLUME_NOT_FOUND", status_only=True
    )
    expect_failure(
        lambda: w.driver.start_merge(w.driver.merge_request(w.disk, w.a2, missing, w.a1)),
        NOT_FOUND,
        "VOLUME_NOT_FOUND",
        driver=w.driver,
    )
    req = w.driver.rebase_request(w.disk, missing, w.a0)
    expect_failure(
        lambda: w.agent.stub().RebaseVolume(req, timeout=30),
        NOT_FOUND,
        "VOLUME_NOT_FOUND",
        driver=w.driver,
    )
    w.unchanged(before)


def test_survivor_must_be_top(world: World) -> None:
    w = world
    before = w.snapshot()
    for survivor in (w.a1, new_uuid()):
        req = w.driver.merge_request(w.disk, w.a1, w.a2, w.a0, survivor_id=survivor)
        expect_failure(
            lambda req=req: w.driver.start_merge(req),  # type: ignore[misc]
            INVALID_ARGUMENT,
            "UNSUPPORTED_SURVIVOR",
            driver=w.driver,
        )
    w.unchanged(before)


def test_merge_refuses_a_chain_that_differs_from_storage(world: World) -> None:
    w = world
    cases = [
        (w.a1, w.a2, ""),  # a1's parent is a0
        (w.a1, w.a2, new_uuid()),
        (w.a1, w.a2, w.b0),
        (w.a1, w.a2, w.a1),
        (w.a0, w.a1, w.a2),  # a0 is a root
        (w.a2, w.a1, w.a1),  # a1's backing is a0, not a2 (a2 has no children at all)
    ]
    before = w.snapshot()
    for base, top, base_parent in cases:
        req = w.driver.merge_request(w.disk, base, top, base_parent)
        expect_failure(
            lambda req=req: w.driver.start_merge(req),  # type: ignore[misc]
            FAILED_PRECONDITION,
            "CHAIN_MISMATCH",
            driver=w.driver,
        )
    w.unchanged(before)


# -- symlinks (SPEC §6.2: no component below the root may be a symlink) -----------------------


def _plant_outside_volume(w: World) -> tuple[Path, str]:
    """A valid-looking disk directory outside the root, with one volume and its sidecar."""
    disk_dir = w.outside / "disk"
    disk_dir.mkdir()
    vol = new_uuid()
    qemu.create(disk_dir / vol, "qcow2", 8 * MiB)
    sidecar = json.loads(w.driver.sidecar_path(w.disk, w.a0).read_text())
    sidecar.update({"volume_id": vol, "parent_id": None})
    (disk_dir / f"{vol}.meta.json").write_text(json.dumps(sidecar))
    return disk_dir, vol


def _all_calls_refused(w: World, disk: str, vol: str) -> None:
    drv = w.driver
    short_calls: list[Callable[[], Any]] = [
        lambda: drv.create_base(disk, new_uuid(), size=8 * MiB),
        lambda: drv.create_overlay(disk, vol, new_uuid()),
        lambda: drv.delete_volume(disk, vol),
        lambda: drv.list_volumes(disk),
        lambda: drv.volume_info(disk, vol),
        lambda: drv.verify(disk, vol),
    ]
    problems = []
    for i, call in enumerate(short_calls):
        try:
            expect_failure(call, INVALID_ARGUMENT, "PATH_OUTSIDE_ROOT", status_only=True)
        except AssertionError as exc:
            problems.append(f"call #{i}: {exc}")
    assert not problems, "\n".join(problems)


def test_symlinked_disk_directory_pointing_outside_the_root(world: World) -> None:
    w = world
    outside_disk, vol = _plant_outside_volume(w)
    disk = new_uuid()
    w.driver.disk_dir(disk).symlink_to(outside_disk, target_is_directory=True)
    before = w.snapshot()
    _all_calls_refused(w, disk, vol)
    w.unchanged(before)


def test_symlinked_disk_directory_pointing_inside_the_root(world: World) -> None:
    w = world
    disk = new_uuid()
    w.driver.disk_dir(disk).symlink_to(w.driver.disk_dir(w.disk_b), target_is_directory=True)
    before = w.snapshot()
    _all_calls_refused(w, disk, w.b0)
    w.unchanged(before)


def test_symlinked_volume_file(world: World) -> None:
    w = world
    outside_disk, vol = _plant_outside_volume(w)
    disk = new_uuid()
    expect_done(w.driver.create_base(disk, new_uuid(), size=8 * MiB))
    os.symlink(outside_disk / vol, w.driver.volume_path(disk, vol))
    shutil.copy(outside_disk / f"{vol}.meta.json", w.driver.sidecar_path(disk, vol))
    sidecar = json.loads(w.driver.sidecar_path(disk, vol).read_text())
    sidecar["disk_id"] = disk
    w.driver.sidecar_path(disk, vol).write_text(json.dumps(sidecar))
    before = w.snapshot()
    drv = w.driver
    for call in (
        lambda: drv.delete_volume(disk, vol),
        lambda: drv.volume_info(disk, vol),
        lambda: drv.create_overlay(disk, vol, new_uuid()),
        lambda: drv.verify(disk, vol),
    ):
        expect_failure(call, INVALID_ARGUMENT, "PATH_OUTSIDE_ROOT", status_only=True)
    w.unchanged(before)
    assert (outside_disk / vol).is_file()


def test_symlinked_tombstones_directory(world: World) -> None:
    w = world
    tombstones = w.driver.domain_dir / "tombstones"
    if tombstones.exists():
        shutil.rmtree(tombstones)
    tombstones.symlink_to(w.outside, target_is_directory=True)
    before = w.snapshot()
    expect_failure(
        lambda: w.driver.delete_volume(w.disk, w.a2),
        INVALID_ARGUMENT,
        "PATH_OUTSIDE_ROOT",
        status_only=True,
    )
    w.unchanged(before)
    assert w.driver.volume_path(w.disk, w.a2).exists()


def test_symlinked_domain_directory(world: World, shared_agent: AgentProcess) -> None:
    w = world
    fake_domain = w.outside / "domain"
    shutil.copytree(w.driver.domain_dir, fake_domain, symlinks=True)
    other = AgentDriver(shared_agent, new_uuid())
    domain_json = json.loads((fake_domain / "domain.json").read_text())
    for key in ("id", "domain_id"):
        if key in domain_json:
            domain_json[key] = other.domain_id
    (fake_domain / "domain.json").write_text(json.dumps(domain_json))
    other.domain_dir.symlink_to(fake_domain, target_is_directory=True)
    before = w.snapshot()
    for call in (
        lambda: other.list_volumes(w.disk),
        lambda: other.create_base(w.disk, new_uuid(), size=8 * MiB),
        lambda: other.delete_volume(w.disk, w.a2),
        lambda: other.init_domain(),
    ):
        expect_failure(
            call,
            (INVALID_ARGUMENT, NOT_FOUND),
            ("PATH_OUTSIDE_ROOT", "DOMAIN_NOT_FOUND"),
            status_only=True,
        )
    w.unchanged(before)


@pytest.fixture(autouse=True)
def _no_leftover_symlinks(world: World) -> Iterator[None]:
    """Symlinks planted by a test must not leak into the shared agent's later scans."""
    yield
    for dirpath, dirnames, filenames in os.walk(world.agent.root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            if path.is_symlink():
                path.unlink()
