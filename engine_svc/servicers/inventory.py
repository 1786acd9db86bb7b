"""InventoryService: hosts, storage domains, VMs and disks."""

from __future__ import annotations

import grpc

from disksnap.engine.v1 import inventory_pb2, inventory_pb2_grpc
from engine_svc import convert, queries
from engine_svc.app import EngineApp
from engine_svc.commands.add_disk import AddDisk, add_disk
from engine_svc.commands.attach_disk import AttachDisk, attach_disk
from engine_svc.commands.create_storage_domain import CreateStorageDomain, create_storage_domain
from engine_svc.commands.create_vm import CreateVm, create_vm
from engine_svc.commands.detach_disk import DetachDisk, detach_disk
from engine_svc.commands.remove_disk import RemoveDisk, remove_disk
from engine_svc.commands.remove_vm import RemoveVm, remove_vm
from engine_svc.commands.set_vm_run_state import SetVmRunState, set_vm_run_state
from engine_svc.commands.update_vm import UpdateVm, update_vm
from engine_svc.servicers.edge import rpc


class InventoryServicer(inventory_pb2_grpc.InventoryServiceServicer):
    """Edge of the inventory RPCs."""

    def __init__(self, app: EngineApp) -> None:
        self.app = app

    @rpc
    def ListHosts(
        self, request: inventory_pb2.ListHostsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListHostsResponse:
        queries.page_size(request.page_size)
        hosts = queries.list_hosts(self.app.db, self.app.settings.heartbeat_interval)
        return inventory_pb2.ListHostsResponse(hosts=[convert.host_to_proto(h) for h in hosts])

    @rpc
    def CreateStorageDomain(
        self, request: inventory_pb2.CreateStorageDomainRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.CreateStorageDomainResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = create_storage_domain(
            self.app.db,
            self.app.settings,
            CreateStorageDomain(name=request.name, host_id=request.host_id, envelope=env),
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.CreateStorageDomainResponse(job=convert.job_to_proto(view))

    @rpc
    def ListStorageDomains(
        self, request: inventory_pb2.ListStorageDomainsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListStorageDomainsResponse:
        queries.page_size(request.page_size)
        domains = queries.list_domains(self.app.db, self.app.settings.heartbeat_interval)
        return inventory_pb2.ListStorageDomainsResponse(
            domains=[convert.domain_to_proto(d) for d in domains]
        )

    @rpc
    def CreateVm(
        self, request: inventory_pb2.CreateVmRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.CreateVmResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = create_vm(self.app.db, CreateVm(convert.vm_config_from_proto(request.config), env))
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.CreateVmResponse(job=convert.job_to_proto(view))

    @rpc
    def GetVm(
        self, request: inventory_pb2.GetVmRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.GetVmResponse:
        return inventory_pb2.GetVmResponse(
            vm=convert.vm_to_proto(queries.get_vm(self.app.db, request.vm_id))
        )

    @rpc
    def ListVms(
        self, request: inventory_pb2.ListVmsRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListVmsResponse:
        vms, token = queries.list_vms(
            self.app.db, request.name, request.page_size, request.page_token
        )
        return inventory_pb2.ListVmsResponse(
            vms=[convert.vm_to_proto(v) for v in vms], next_page_token=token
        )

    @rpc
    def AddDisk(
        self, request: inventory_pb2.AddDiskRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.AddDiskResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = add_disk(
            self.app.db,
            self.app.settings,
            AddDisk(
                alias=request.alias,
                kind=convert.disk_kind_from_proto(request.kind),
                description=request.description,
                shareable=request.shareable,
                domain_id=request.domain_id,
                virtual_size=request.virtual_size,
                format=convert.format_from_proto(request.format),
                lun_id=request.lun_id,
                vm_id=request.vm_id,
                interface=convert.interface_from_proto(request.interface),
                bootable=request.bootable,
                envelope=env,
            ),
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.AddDiskResponse(job=convert.job_to_proto(view))

    @rpc
    def GetDisk(
        self, request: inventory_pb2.GetDiskRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.GetDiskResponse:
        return inventory_pb2.GetDiskResponse(
            disk=convert.disk_to_proto(queries.get_disk(self.app.db, request.disk_id))
        )

    @rpc
    def ListDisks(
        self, request: inventory_pb2.ListDisksRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.ListDisksResponse:
        disks, token = queries.list_disks(
            self.app.db,
            request.vm_id,
            request.floating_only,
            request.page_size,
            request.page_token,
        )
        return inventory_pb2.ListDisksResponse(
            disks=[convert.disk_to_proto(d) for d in disks], next_page_token=token
        )

    @rpc
    def UpdateVm(
        self, request: inventory_pb2.UpdateVmRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.UpdateVmResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = update_vm(
            self.app.db,
            UpdateVm(
                vm_id=request.vm_id,
                config=convert.vm_config_from_proto(request.config),
                paths=convert.mask_paths(request.update_mask),
                disks=tuple(convert.disk_update_from_proto(d) for d in request.disks),
                envelope=env,
            ),
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.UpdateVmResponse(job=convert.job_to_proto(view))

    @rpc
    def SetVmRunState(
        self, request: inventory_pb2.SetVmRunStateRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.SetVmRunStateResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = set_vm_run_state(
            self.app.db,
            self.app.settings,
            SetVmRunState(
                vm_id=request.vm_id,
                run_state=convert.run_state_from_proto(request.run_state),
                host_id=request.host_id,
                envelope=env,
            ),
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.SetVmRunStateResponse(job=convert.job_to_proto(view))

    @rpc
    def RemoveVm(
        self, request: inventory_pb2.RemoveVmRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.RemoveVmResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = remove_vm(self.app.db, self.app.settings, RemoveVm(request.vm_id, env))
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.RemoveVmResponse(job=convert.job_to_proto(view))

    @rpc
    def RemoveDisk(
        self, request: inventory_pb2.RemoveDiskRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.RemoveDiskResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = remove_disk(self.app.db, self.app.settings, RemoveDisk(request.disk_id, env))
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.RemoveDiskResponse(job=convert.job_to_proto(view))

    @rpc
    def AttachDisk(
        self, request: inventory_pb2.AttachDiskRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.AttachDiskResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = attach_disk(
            self.app.db,
            AttachDisk(
                disk_id=request.disk_id,
                vm_id=request.vm_id,
                interface=convert.interface_from_proto(request.interface),
                bootable=request.bootable,
                envelope=env,
            ),
        )
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.AttachDiskResponse(job=convert.job_to_proto(view))

    @rpc
    def DetachDisk(
        self, request: inventory_pb2.DetachDiskRequest, context: grpc.ServicerContext
    ) -> inventory_pb2.DetachDiskResponse:
        env = convert.envelope_from_proto(request.envelope)
        job = detach_disk(self.app.db, DetachDisk(request.disk_id, request.vm_id, env))
        view = self.app.admitted(job, env.wait_timeout_s)
        return inventory_pb2.DetachDiskResponse(job=convert.job_to_proto(view))
