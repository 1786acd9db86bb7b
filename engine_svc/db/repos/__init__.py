"""Repositories, one module per aggregate. They take a Session and never commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from engine_svc.db.models import Base
from engine_svc.db.repos.disks import DiskRepository
from engine_svc.db.repos.hosts import HostRepository
from engine_svc.db.repos.jobs import JobRepository
from engine_svc.db.repos.locks import LockRepository
from engine_svc.db.repos.rows import insert_new
from engine_svc.db.repos.snapshots import SnapshotRepository
from engine_svc.db.repos.vms import VmRepository
from engine_svc.db.repos.volumes import VolumeRepository


class Repositories:
    """Every repository bound to one transaction's session."""

    def __init__(self, session: Session, *, postgres: bool) -> None:
        self.session = session
        self.hosts = HostRepository(session, postgres=postgres)
        self.vms = VmRepository(session)
        self.disks = DiskRepository(session)
        self.volumes = VolumeRepository(session)
        self.snapshots = SnapshotRepository(session)
        self.jobs = JobRepository(session, postgres=postgres)
        self.locks = LockRepository(session, postgres=postgres)

    def insert_new(self, objects: Sequence[Base]) -> None:
        """INSERT new rows of one model now, untracked (see ``rows.insert_new``)."""
        insert_new(self.session, objects)
