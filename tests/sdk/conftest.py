"""Fixtures of the SDK suite: the shared embedded server and a client to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import disksnap
from disksnap.embedded import EmbeddedServer
from sdk.embedded_fixture import shared_server, stop_shared, unique

MIB = 1 << 20


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedServer]:
    yield shared_server(tmp_path_factory)
    stop_shared()


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


@pytest.fixture
def vm(client: disksnap.Client, server: EmbeddedServer) -> disksnap.Vm:
    return make_vm(client, server)
