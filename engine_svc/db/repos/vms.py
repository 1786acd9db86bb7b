"""VMs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from engine_svc.db.models import Vm

# Built once: a statement object caches its compiled form and cache key (hot path).
_VM_FOR_UPDATE = select(Vm).where(Vm.id == bindparam("vm_id")).with_for_update()


class VmRepository:
    """VM rows."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, vm_id: str, *, for_update: bool = False) -> Vm | None:
        """The VM, or None; ``for_update`` row-locks it (serialises admissions per VM)."""
        if for_update:
            return self.session.scalar(_VM_FOR_UPDATE, {"vm_id": vm_id})
        return self.session.get(Vm, vm_id)

    def by_name(self, name: str) -> Vm | None:
        """The VM named ``name``, or None."""
        return self.session.scalar(select(Vm).where(Vm.name == name))

    def list(self, *, name: str = "", after: str = "", limit: int = 100) -> Sequence[Vm]:
        """VMs ordered by (name); ``after`` is the last name of the previous page."""
        stmt = select(Vm).order_by(Vm.name).limit(limit)
        if name:
            stmt = stmt.where(Vm.name == name)
        if after:
            stmt = stmt.where(Vm.name > after)
        return self.session.scalars(stmt).all()

    def add(self, vm: Vm) -> None:
        """Insert a VM."""
        self.session.add(vm)

    def delete(self, vm: Vm) -> None:
        """Delete a VM row."""
        self.session.delete(vm)
