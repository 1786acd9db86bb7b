"""``disksnap preview|commit|undo|restore`` and ``disk tree`` against the real embedded server,
table and JSON output, with the data read back through each disk's head with qemu-io."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from cli.conftest import Cli
from disksnap.embedded import EmbeddedServer
from support import qemu

pytestmark = pytest.mark.skipif(shutil.which("qemu-io") is None, reason="qemu-io is missing")
MiB = 1 << 20


class Disks:
    """The disks of one VM by alias, read and written through their heads."""

    def __init__(self, cli: Cli, server: EmbeddedServer, vm_name: str) -> None:
        self.cli = cli
        self.server = server
        self.vm_name = vm_name
        self.ids = {d["alias"]: d["id"] for d in cli("disk", "list", vm_name, json=True).json()}

    def head(self, alias: str) -> str:
        head: str = self.tree(alias)["head_id"]
        return head

    def tree(self, alias: str) -> dict[str, Any]:
        """``disk tree -o json``."""
        r = self.cli("disk", "tree", self.vm_name, alias, json=True)
        assert r.exit_code == 0, r.stderr
        doc: dict[str, Any] = r.json()
        return doc

    def _head_file(self, alias: str) -> tuple[Path, str]:
        path = self.server.volume_path(self.ids[alias], self.head(alias))
        return path, str(qemu.info(path)["format"])

    def write(self, alias: str, byte: int) -> None:
        """The first MiB of the disk := ``byte``."""
        qemu.write_pattern(*self._head_file(alias), byte, 0, MiB)

    def expect(self, alias: str, byte: int) -> None:
        """The first MiB of the disk reads as ``byte``."""
        qemu.assert_pattern(*self._head_file(alias), byte, 0, MiB)


def _outcomes(doc: dict[str, Any]) -> dict[str, str]:
    return {o["disk_alias"]: o["outcome"] for o in doc["job"]["outcomes"]}


def _preview_id(cli: Cli, vm_name: str) -> str:
    """The id of the VM's PREVIEW snapshot, from ``snapshot list``."""
    snaps = cli("snapshot", "list", vm_name, json=True).json()
    preview_id: str = next(s["id"] for s in snaps if s["type"] == "PREVIEW")
    return preview_id


def test_preview_undo_commit_restore(cli: Cli, server: EmbeddedServer, vm_name: str) -> None:
    disks = Disks(cli, server, vm_name)
    disks.write("os", 0x11)
    disks.write("data", 0x21)
    s1 = cli("snapshot", "create", vm_name, "-d", "S1", json=True).json()["snapshot"]["id"]
    disks.write("os", 0x12)
    disks.write("data", 0x22)
    before = {alias: disks.head(alias) for alias in disks.ids}

    # preview (table output): S1's configuration, os from S1, data excluded.
    r = cli("preview", vm_name, "--config", "S1", "--disk", "os=S1", "--disk", "data=exclude")
    assert r.exit_code == 0, r.stderr
    assert f"{vm_name} is in preview; 'commit' or 'undo' it" in r.stdout
    shown = cli("vm", "show", vm_name, json=True).json()
    assert shown["in_preview"] is True
    states = {d["alias"]: d["attachments"][0]["state"] for d in shown["disks"]}
    assert states == {"os": "ATTACHED", "data": "PREVIEW_DETACHED"}
    disks.expect("os", 0x11)
    preview = cli("snapshot", "show", vm_name, _preview_id(cli, vm_name), json=True).json()
    assert preview["type"] == "PREVIEW"
    assert preview["preview_plan"]["config_snapshot_id"] == s1
    again = cli("preview", vm_name, "--config", "S1", json=True)
    assert again.exit_code == 4 and again.error()["reason"] == "VM_IN_PREVIEW"

    # disk tree while previewing: S1's volume has two children, the old head and the overlay.
    tree = disks.tree("os")
    volumes = {v["id"]: v for v in tree["volumes"]}
    head = volumes[tree["head_id"]]
    base = volumes[head["parent_id"]]
    assert base["owner"]["snapshot_id"] == s1
    assert head["owner"]["type"] == "ACTIVE" and head["format"] == "COW"
    assert volumes[before["os"]]["owner"]["type"] == "PREVIEW"
    assert volumes[before["os"]]["parent_id"] == base["id"] and not volumes[before["os"]]["active"]
    drawn = cli("disk", "tree", vm_name, "os")
    assert drawn.exit_code == 0
    assert "*head*" in drawn.stdout and "S1" in drawn.stdout
    assert "preview: Active VM before the preview" in drawn.stdout

    # undo (JSON): everything back, the pre-preview data too.
    undone = cli("undo", vm_name, json=True)
    assert undone.exit_code == 0, undone.stderr
    assert undone.json()["job"]["kind"] == "UNDO_PREVIEW"
    assert _outcomes(undone.json()) == {"os": "RESTORED", "data": "REATTACHED"}
    assert {alias: disks.head(alias) for alias in disks.ids} == before
    disks.expect("os", 0x12)
    disks.expect("data", 0x22)
    not_previewing = cli("undo", vm_name, json=True)
    assert not_previewing.exit_code == 4
    assert not_previewing.error()["reason"] == "VM_SNAPSHOT_NOT_IN_PREVIEW"

    # preview (JSON) of os only, data kept; commit (table): the previewed data stays.
    previewed = cli("preview", vm_name, "--disk", "os=S1", "--disk", "data=current", json=True)
    assert previewed.exit_code == 0, previewed.stderr
    assert _outcomes(previewed.json()) == {"os": "PREVIEWED", "data": "KEPT"}
    committed = cli("commit", vm_name)
    assert committed.exit_code == 0, committed.stderr
    assert f"Preview of {vm_name} committed" in committed.stdout
    disks.expect("os", 0x11)
    disks.expect("data", 0x22)
    assert not server.volume_path(disks.ids["os"], before["os"]).exists()
    assert "garbage" not in cli("disk", "tree", vm_name, "os").stdout

    # restore (JSON): data from S1, os kept, in one job.
    restored = cli("restore", vm_name, "S1", "--disk", "os=current", "--disk", "data=S1", json=True)
    assert restored.exit_code == 0, restored.stderr
    job = restored.json()["job"]
    assert (job["kind"], job["state"]) == ("RESTORE_SNAPSHOT", "SUCCEEDED")
    assert _outcomes(restored.json()) == {"os": "KEPT", "data": "COMMITTED"}
    assert cli("vm", "show", vm_name, json=True).json()["in_preview"] is False
    disks.expect("os", 0x11)
    disks.expect("data", 0x21)
    check = cli("check", "--vm", vm_name, "--verify-images", json=True).json()
    assert check == {"consistent": True, "violations": []}


def test_commit_detached_disk_floating_or_deleted(cli: Cli, vm_name: str) -> None:
    cli("snapshot", "create", vm_name, "-d", "S1")
    r = cli("preview", vm_name, "--disk", "os=S1", "--disk", "data=exclude", json=True)
    assert r.exit_code == 0, r.stderr
    committed = cli("commit", vm_name, json=True)
    assert _outcomes(committed.json()) == {"os": "COMMITTED", "data": "FLOATING"}
    floating = cli("disk", "list", "--floating", json=True).json()
    data = next(d for d in floating if d["alias"] == "data" and not d["attachments"])
    assert data["history_vm_id"]
    # A restore of S1 re-attaches it; a later preview that excludes it and a commit with
    # --delete-detached-disks deletes it.
    restored = cli("restore", vm_name, "S1", json=True)
    assert _outcomes(restored.json()) == {"os": "COMMITTED", "data": "COMMITTED"}
    r = cli("preview", vm_name, "--disk", "os=S1", "--disk", "data=exclude")
    assert r.exit_code == 0, r.stderr
    deleted = cli("commit", vm_name, "--delete-detached-disks", json=True)
    assert _outcomes(deleted.json()) == {"os": "COMMITTED", "data": "DELETED"}
    assert [d["alias"] for d in cli("disk", "list", vm_name, json=True).json()] == ["os"]
    assert cli("disk", "show", data["id"]).exit_code == 3
