"""Exit codes and error messages: not found 3, invalid 2, conflict 4, unavailable 5."""

from __future__ import annotations

import socket

from cli.conftest import Cli


def test_not_found(cli: Cli) -> None:
    r = cli("vm", "show", "no-such-vm")
    assert r.exit_code == 3
    assert "no VM named 'no-such-vm'" in r.stderr and r.stdout == ""
    doc = cli("vm", "show", "no-such-vm", json=True).error()
    assert doc["reason"] == "NOT_FOUND" and doc["exit_code"] == 3


def test_not_found_from_the_engine(cli: Cli) -> None:
    r = cli("job", "show", "00000000-0000-4000-8000-000000000001", json=True)
    assert r.exit_code == 3 and r.error()["reason"] == "NOT_FOUND"
    r = cli("snapshot", "list", "00000000-0000-4000-8000-000000000002", json=True)
    assert r.exit_code == 3


def test_not_found_disk_and_snapshot(cli: Cli, vm_name: str) -> None:
    r = cli("disk", "tree", vm_name, "nope")
    assert r.exit_code == 3 and f"no disk of VM {vm_name} named 'nope'" in r.stderr
    r = cli("snapshot", "show", vm_name, "never taken")
    assert r.exit_code == 3


def test_invalid_arguments(cli: Cli, vm_name: str) -> None:
    r = cli("vm", "create", "bad name!")
    assert r.exit_code == 2 and "INVALID_FIELD" in r.stderr
    r = cli("vm", "create", "x", "--disk", "os:12Q")
    assert r.exit_code == 2 and "not a size" in r.stderr
    r = cli("snapshot", "create", vm_name, "-d", "   ", json=True)
    assert r.exit_code == 2 and r.error()["reason"] == "DESCRIPTION_EMPTY"
    assert r.error()["message"] == "The description must not be empty."
    r = cli("snapshot", "create", vm_name)  # missing -d: a usage error
    assert r.exit_code == 2


def test_conflict(cli: Cli, vm_name: str) -> None:
    r = cli("vm", "create", vm_name)
    assert r.exit_code == 4
    assert f"The name {vm_name} is already used" in r.stderr and "NAME_ALREADY_USED" in r.stderr
    doc = cli("vm", "create", vm_name, json=True).error()
    assert doc["reason"] == "NAME_ALREADY_USED" and doc["metadata"]["name"] == vm_name


def test_unavailable(cli: Cli) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    r = cli("vm", "list", engine=closed)
    assert r.exit_code == 5 and r.stdout == ""
    assert f"Error: The engine at {closed} cannot be reached. Is it running? (UNAVAILABLE)" in (
        r.stderr
    )


def test_ambiguous_snapshot_description(cli: Cli, vm_name: str) -> None:
    first = cli("snapshot", "create", vm_name, "-d", "twice", json=True).json()
    second = cli("snapshot", "create", vm_name, "-d", "twice", json=True).json()
    r = cli("snapshot", "show", vm_name, "twice")
    assert r.exit_code == 2
    assert "'twice' is ambiguous: 2 snapshots" in r.stderr
    for doc in (first, second):
        assert doc["snapshot"]["id"] in r.stderr
    err = cli("snapshot", "remove", vm_name, "twice", json=True).error()
    assert err["reason"] == "AMBIGUOUS_NAME" and len(err["candidates"]) == 2


def test_ambiguous_disk_alias(cli: Cli, vm_name: str) -> None:
    assert cli("disk", "add", vm_name, "os:1M", "--domain", "local").exit_code == 0
    r = cli("snapshot", "create", vm_name, "-d", "which os", "--disk", "os")
    assert r.exit_code == 2 and "'os' is ambiguous: 2 disks of VM" in r.stderr


def test_ambiguous_default_domain(cli: Cli, vm_name: str) -> None:
    if len(cli("domain", "list", json=True).json()) < 2:
        assert cli("domain", "create", "second-domain").exit_code == 0
    r = cli("disk", "add", vm_name, "x:1M")
    assert r.exit_code == 2
    assert "storage domains could be meant; choose one with --domain" in r.stderr


def test_commit_when_not_in_preview(cli: Cli, vm_name: str) -> None:
    r = cli("commit", vm_name, json=True)
    assert (r.exit_code, r.error()["reason"]) == (4, "VM_SNAPSHOT_NOT_IN_PREVIEW")


def test_preview_selection_incomplete(cli: Cli, vm_name: str) -> None:
    assert cli("snapshot", "create", vm_name, "-d", "S1").exit_code == 0
    r = cli("preview", vm_name, "--disk", "os=S1")
    assert r.exit_code == 2
    assert "must select or exclude every attached disk; missing: data" in r.stderr
    err = cli("preview", vm_name, "--disk", "os=S1", json=True).error()
    assert err["reason"] == "PREVIEW_DISK_SELECTION_INCOMPLETE"
    assert err["metadata"]["disk_aliases"] == "data"


def test_preview_needs_a_selection(cli: Cli, vm_name: str) -> None:
    r = cli("preview", vm_name)
    assert r.exit_code == 2 and "--config" in r.stderr
