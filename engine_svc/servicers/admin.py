"""AdminService: the consistency checker."""

from __future__ import annotations

import grpc

from disksnap.engine.v1 import admin_pb2, admin_pb2_grpc
from engine_svc.app import EngineApp
from engine_svc.checker import Scope, check_consistency
from engine_svc.queries import require_id
from engine_svc.servicers.edge import rpc


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """Edge of CheckConsistency."""

    def __init__(self, app: EngineApp) -> None:
        self.app = app

    @rpc
    def CheckConsistency(
        self, request: admin_pb2.CheckConsistencyRequest, context: grpc.ServicerContext
    ) -> admin_pb2.CheckConsistencyResponse:
        scope = Scope()
        if request.scope == admin_pb2.CHECK_SCOPE_VM:
            require_id("entity_id", request.entity_id)
            scope = Scope(vm_id=request.entity_id)
        elif request.scope == admin_pb2.CHECK_SCOPE_DOMAIN:
            require_id("entity_id", request.entity_id)
            scope = Scope(domain_id=request.entity_id)
        violations = check_consistency(
            self.app.db,
            self.app.agents,
            self.app.settings,
            scope,
            verify_images=request.verify_images,
        )
        return admin_pb2.CheckConsistencyResponse(
            violations=[
                admin_pb2.Violation(invariant=v.invariant, entity_id=v.entity_id, detail=v.detail)
                for v in violations
            ]
        )
