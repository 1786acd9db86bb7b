"""Service surface: health, reflection, capabilities, domains, verify, memory state, listing."""

from __future__ import annotations

import json

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from disksnap.agent.v1 import agent_pb2
from support import qemu
from support.agent import AgentDriver, expect_done, expect_failure
from support.content import MiB
from support.ids import new_op_id, new_uuid
from support.processes import AgentFactory, AgentProcess

SERVICE = "disksnap.agent.v1.StorageAgentService"


def test_health_reports_serving(shared_agent: AgentProcess) -> None:
    stub = health_pb2_grpc.HealthStub(shared_agent.channel())
    resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert resp.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_agent_service(shared_agent: AgentProcess) -> None:
    db = ProtoReflectionDescriptorDatabase(shared_agent.channel())
    services = db.get_services()
    assert SERVICE in services, services
    pool = descriptor_pool.DescriptorPool(db)
    service = pool.FindServiceByName(SERVICE)
    methods = {m.name for m in service.methods}
    assert {"CreateVolume", "MergeVolumes", "GetOperation", "ListVolumes"} <= methods


def test_ready_file_names_the_serving_process(shared_agent: AgentProcess) -> None:
    ready = json.loads(shared_agent.ready_file.read_text())
    assert ready["address"] == shared_agent.address
    assert ready["address"].startswith("127.0.0.1:")
    assert int(ready["pid"]) == shared_agent.pid


def test_capabilities(shared_driver: AgentDriver) -> None:
    agent = shared_driver.agent
    caps = agent.stub().Capabilities(agent_pb2.CapabilitiesRequest(), timeout=10)
    assert caps.host_name == agent.host_name
    assert set(caps.formats) == {"raw", "qcow2"}
    assert caps.live_ops is False
    assert "7.2" in caps.qemu_img_version
    assert caps.agent_version
    assert {"CreateVolume", "DeleteVolume", "MergeVolumes", "RebaseVolume"} <= set(caps.operations)
    domains = {d.domain_id: d for d in caps.domains}
    assert shared_driver.domain_id in domains
    assert domains[shared_driver.domain_id].total_bytes > 0
    assert (
        0
        <= domains[shared_driver.domain_id].free_bytes
        <= domains[shared_driver.domain_id].total_bytes
    )


def test_init_domain_is_idempotent_and_lays_out_the_domain(shared_agent: AgentProcess) -> None:
    drv = AgentDriver(shared_agent)
    op_id = new_op_id()
    first = expect_done(drv.init_domain("d1", op_id=op_id))
    assert first.kind == agent_pb2.OPERATION_KIND_INIT_DOMAIN
    assert first.result.domain.domain_id == drv.domain_id
    assert first.result.domain.name == "d1"
    domain_json = json.loads((drv.domain_dir / "domain.json").read_text())
    assert drv.domain_id in domain_json.values()
    assert (drv.domain_dir / "images").is_dir()
    again = expect_done(drv.init_domain("d1", op_id=op_id))
    assert again.op_id == op_id
    assert again.result.domain.domain_id == drv.domain_id
    expect_done(drv.init_domain("d1"))  # new op_id, same domain: still DONE


def test_verify_reports_a_clean_volume(shared_driver: AgentDriver) -> None:
    disk, vol = new_uuid(), new_uuid()
    expect_done(shared_driver.create_base(disk, vol, size=8 * MiB))
    op = expect_done(shared_driver.verify(disk, vol))
    assert op.kind == agent_pb2.OPERATION_KIND_VERIFY_VOLUME
    assert op.result.verify.ok
    assert op.result.verify.corruptions == 0 and op.result.verify.leaks == 0


def test_verify_reports_a_damaged_volume(shared_driver: AgentDriver) -> None:
    disk, vol = new_uuid(), new_uuid()
    expect_done(shared_driver.create_base(disk, vol, size=8 * MiB))
    path = shared_driver.volume_path(disk, vol)
    qemu.write_pattern(path, "qcow2", 0x5A, 0, 64 * 1024)
    qemu.corrupt_refcount_of_first_data_cluster(path)
    op = expect_done(shared_driver.verify(disk, vol))
    assert not op.result.verify.ok
    assert op.result.verify.corruptions > 0


def test_memory_state_is_unsupported_without_live_ops(shared_driver: AgentDriver) -> None:
    stub = shared_driver.agent.stub()
    save = agent_pb2.SaveMemoryStateRequest(
        op_id=new_op_id(), domain_id=shared_driver.domain_id, memory_id=new_uuid(), vm_id=new_uuid()
    )
    expect_failure(
        lambda: stub.SaveMemoryState(save, timeout=10),
        (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.FAILED_PRECONDITION),
        "UNSUPPORTED_OPERATION",
        driver=shared_driver,
    )
    delete = agent_pb2.DeleteMemoryStateRequest(
        op_id=new_op_id(), domain_id=shared_driver.domain_id, memory_id=new_uuid()
    )
    op = expect_done(stub.DeleteMemoryState(delete, timeout=10).operation)
    assert op.result.already_absent


def test_listing_reports_volumes_oldest_first_and_stray_files(shared_driver: AgentDriver) -> None:
    drv = shared_driver
    disk, v0, v1, v2 = new_uuid(), new_uuid(), new_uuid(), new_uuid()
    expect_done(drv.create_base(disk, v0, size=8 * MiB))
    expect_done(drv.create_overlay(disk, v0, v1))
    expect_done(drv.create_overlay(disk, v1, v2))
    listing = drv.list_volumes(disk)
    assert [v.volume_id for v in listing.volumes] == [v0, v1, v2]
    assert [v.leaf for v in listing.volumes] == [False, False, True]
    assert all(v.disk_id == disk and v.domain_id == drv.domain_id for v in listing.volumes)
    assert not listing.stray_files

    orphan, tmp = new_uuid(), f"{new_uuid()}.tmp"
    (drv.disk_dir(disk) / orphan).write_bytes(b"\0" * 4096)
    (drv.disk_dir(disk) / tmp).write_bytes(b"")
    lonely_sidecar = drv.sidecar_path(disk, new_uuid())
    lonely_sidecar.write_text(drv.sidecar_path(disk, v2).read_text())
    strays = {s.name: s.detail for s in drv.list_volumes(disk).stray_files}
    for name in (orphan, tmp, lonely_sidecar.name):
        assert any(name in s or s in name for s in strays), f"{name} not reported: {strays}"
    assert all(strays.values()), f"stray files need a reason: {strays}"
    assert [v.volume_id for v in drv.list_volumes(disk).volumes] == [v0, v1, v2]


def test_recorded_only_listing_matches_the_inspected_one(shared_driver: AgentDriver) -> None:
    drv = shared_driver
    disk, v0, v1 = new_uuid(), new_uuid(), new_uuid()
    expect_done(drv.create_base(disk, v0, size=64 * MiB))
    qemu.write_pattern(drv.volume_path(disk, v0), "qcow2", 0x11, 0, 8 * MiB)
    expect_done(drv.create_overlay(disk, v0, v1))
    qemu.write_pattern(drv.volume_path(disk, v1), "qcow2", 0x22, 8 * MiB, 4 * MiB)
    inspected = drv.list_volumes(disk)
    recorded = drv.list_volumes(disk, recorded_only=True)
    assert list(recorded.volumes) == list(inspected.volumes)
    assert [v.actual_size > 4 * MiB for v in recorded.volumes] == [True, True]
    assert [v.parent_id for v in recorded.volumes] == ["", v0]


def test_volume_info_matches_the_sidecar(shared_driver: AgentDriver) -> None:
    drv = shared_driver
    disk, v0, v1 = new_uuid(), new_uuid(), new_uuid()
    create_op = new_op_id()
    expect_done(drv.create_base(disk, v0, size=8 * MiB, fmt=agent_pb2.VOLUME_FORMAT_RAW))
    expect_done(drv.create_overlay(disk, v0, v1, op_id=create_op))
    info = drv.volume_info(disk, v1)
    assert info.volume_id == v1
    assert info.parent_id == v0
    assert info.format == agent_pb2.VOLUME_FORMAT_COW
    assert info.virtual_size == 8 * MiB
    assert info.actual_size > 0
    assert info.op_id == create_op
    assert info.leaf
    sidecar = json.loads(drv.sidecar_path(disk, v1).read_text())
    expected_keys = {"volume_id", "disk_id", "domain_id", "parent_id", "format", "virtual_size"}
    assert expected_keys | {"created_at", "op_id"} <= set(sidecar)
    assert (sidecar["volume_id"], sidecar["disk_id"], sidecar["domain_id"]) == (
        v1,
        disk,
        drv.domain_id,
    )
    assert sidecar["parent_id"] == v0 and sidecar["virtual_size"] == 8 * MiB
    assert drv.volume_info(disk, v0).format == agent_pb2.VOLUME_FORMAT_RAW


def test_restart_keeps_serving_the_same_volumes(agent_factory: AgentFactory) -> None:
    agent = agent_factory("restart")
    drv = AgentDriver(agent)
    expect_done(drv.init_domain())
    disk, vol = new_uuid(), new_uuid()
    expect_done(drv.create_base(disk, vol, size=8 * MiB))
    agent.stop()
    agent.restart()
    assert [v.volume_id for v in drv.list_volumes(disk).volumes] == [vol]
