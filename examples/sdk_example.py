"""A small disksnap SDK client: a VM with two disks, a full and a single-disk snapshot.

Run against a running engine (``disksnap server`` starts one locally)::

    python examples/sdk_example.py [--engine HOST:PORT]

The engine address defaults to $DISKSNAP_ENGINE, else 127.0.0.1:7700.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid

import disksnap
from disksnap import errors

GiB = 1 << 30


def show_progress(job: disksnap.Job) -> None:
    """Print each job change (progress only ever goes up)."""
    print(f"  {job.kind.value}: {job.state.value} {job.progress}%")


def run(client: disksnap.Client) -> None:
    """Create a VM with two disks and snapshot it twice."""
    domain = next(
        d for d in client.list_storage_domains() if d.status is disksnap.DomainStatus.ACTIVE
    )
    name = f"example-{uuid.uuid4().hex[:8]}"
    vm_id = client.create_vm(name, cpu_count=2, memory_mb=2048).result.vm_id
    assert vm_id is not None
    os_disk = client.add_disk("os", GiB, domain_id=domain.id, vm_id=vm_id, bootable=True)
    client.add_disk(
        "data", GiB // 2, domain_id=domain.id, vm_id=vm_id, format=disksnap.DiskFormat.RAW
    )
    print(f"VM {name} ({vm_id}) with disks os and data on {domain.name}")

    # Wait with a progress callback: the handle follows the job through WatchJob.
    handle = client.create_snapshot(vm_id, "before upgrade", wait=False)
    full = handle.wait(progress=show_progress)
    print(f"full snapshot {full.result.snapshot_id}: {[o.outcome.value for o in full.outcomes]}")

    # A single-disk snapshot: only the os disk.
    assert os_disk.result.disk_id is not None
    single = client.create_snapshot(vm_id, "os only", disk_ids=[os_disk.result.disk_id])
    print(f"single-disk snapshot {single.result.snapshot_id}: {single.state.value}")

    for snap in client.list_snapshots(vm_id):
        disks = ", ".join(d.alias for d in snap.disks)
        print(f"  {snap.type.value:<8} {snap.status.value:<10} {snap.description:<16} [{disks}]")

    tree = client.get_disk_volume_tree(os_disk.result.disk_id)
    for volume in tree.volumes:
        owner = volume.owner.description if volume.owner else "-"
        marker = " (head)" if volume.id == tree.head_id else ""
        print(f"  volume {volume.id[:8]} parent {str(volume.parent_id)[:8]} owner {owner}{marker}")

    try:
        client.create_vm(name)
    except errors.NameAlreadyUsed as err:
        print(f"as expected: {err.reason} ({err.metadata.get('entity')})")

    try:
        client.preview_snapshot(vm_id, config_snapshot_id=full.result.snapshot_id)
        client.undo_preview(vm_id)
    except errors.Unimplemented:
        print("preview is not available yet in this engine")


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--engine", default=os.environ.get("DISKSNAP_ENGINE", disksnap.DEFAULT_ADDRESS)
    )
    args = parser.parse_args()
    try:
        with disksnap.Client(args.engine) as client:
            run(client)
    except errors.Unavailable as err:
        print(f"cannot reach the engine at {args.engine}: {err}", file=sys.stderr)
        return 5
    except disksnap.DisksnapError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
