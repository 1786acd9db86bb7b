"""Fixtures of the SDK suite: the shared embedded server and a client to it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

import disksnap
from disksnap import errors
from disksnap.embedded import EmbeddedServer
from sdk.embedded_fixture import shared_server, stop_shared, unique
from support.engine import db_dump

MIB = 1 << 20
# A well-formed id that names nothing.
MISSING = "00000000-0000-4000-8000-000000000001"

E = TypeVar("E", bound=errors.ApiError)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    yield shared_server(tmp_path_factory)
    stop_shared()


@pytest.fixture(scope="session")
def server_db(server: EmbeddedServer) -> str:
    """The database URL of the shared embedded server's engine."""
    return f"sqlite:///{server.db_path}"


@pytest.fixture(scope="session")
def client(server: EmbeddedServer) -> Iterator[disksnap.Client]:
    with disksnap.Client(server.address, timeout=20) as c:
        yield c


def make_vm(
    client: disksnap.Client, server: EmbeddedServer, disks: int = 2, prefix: str = "sdk"
) -> disksnap.Vm:
    """A VM with ``disks`` 16 MiB qcow2 disks named d0, d1, ..."""
    job = client.create_vm(unique(prefix), cpu_count=1, memory_mb=512)
    assert job.result.vm_id
    for i in range(disks):
        client.add_disk(f"d{i}", 16 * MIB, domain_id=server.domain_id, vm_id=job.result.vm_id)
    return client.get_vm(job.result.vm_id)


def rejected(db_url: str, error_type: type[E], call: Callable[[], object]) -> E:
    """Run a call the engine must refuse with ``error_type``; its database must not change.

    SPEC §3.0: a rejected request leaves no row, lock or job. Only for quiescent engines:
    a job running meanwhile changes the database on its own.
    """
    before = db_dump(db_url)
    with pytest.raises(error_type) as caught:
        call()
    assert db_dump(db_url) == before
    return caught.value


@pytest.fixture
def vm(client: disksnap.Client, server: EmbeddedServer) -> disksnap.Vm:
    return make_vm(client, server)
