"""Each implemented command's table and JSON output, against a real embedded server."""

from __future__ import annotations

from sdk.embedded_fixture import unique

from cli.conftest import Cli
from disksnap.embedded import EmbeddedServer


def test_host_list(cli: Cli, server: EmbeddedServer) -> None:
    table = cli("host", "list")
    assert table.exit_code == 0
    assert "local" in table.stdout and "UP" in table.stdout and "NAME" in table.stdout
    hosts = cli("host", "list", json=True).json()
    local = next(h for h in hosts if h["name"] == "local")
    assert local["id"] == server.host_id and local["status"] == "UP"
    assert set(local) == {
        "id", "name", "address", "status", "live_ops", "agent_version", "qemu_img_version",
        "domain_ids", "last_heartbeat_at",
    }  # fmt: skip


def test_domain_list_and_create(cli: Cli, server: EmbeddedServer) -> None:
    table = cli("domain", "list")
    assert table.exit_code == 0 and "local" in table.stdout and "ACTIVE" in table.stdout
    domains = cli("domain", "list", json=True).json()
    local = next(d for d in domains if d["name"] == "local")
    assert local["id"] == server.domain_id
    assert set(local) == {"id", "name", "status", "free_bytes", "total_bytes", "host_ids"}
    name = unique("sd")
    created = cli("domain", "create", name, "--host", "local", json=True)
    assert created.exit_code == 0, created.stderr
    doc = created.json()
    assert doc["job"]["state"] == "SUCCEEDED" and doc["job"]["kind"] == "CREATE_STORAGE_DOMAIN"
    assert doc["domain"]["name"] == name
    again = cli("domain", "create", unique("sd"))
    assert again.exit_code == 0 and "created on local" in again.stdout


def test_vm_create_list_show(cli: Cli) -> None:
    name = unique("vm")
    r = cli(
        "vm", "create", name, "--disk", "os:32M", "--disk", "logs:1M:raw", "--cpus", "2",
        "--memory", "2G", "--description", "made by test", "--domain", "local", json=True,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["job"]["kind"] == "CREATE_VM" and doc["job"]["state"] == "SUCCEEDED"
    assert [j["state"] for j in doc["disk_jobs"]] == ["SUCCEEDED", "SUCCEEDED"]
    vm = doc["vm"]
    assert vm["name"] == name and vm["cpu_count"] == 2 and vm["memory_mb"] == 2048
    disks = {d["alias"]: d for d in vm["disks"]}
    assert disks["os"]["virtual_size"] == 32 << 20 and disks["os"]["format"] == "COW"
    assert disks["logs"]["format"] == "RAW"

    listed = cli("vm", "list", json=True).json()
    assert name in {v["name"] for v in listed}
    table = cli("vm", "list")
    assert table.exit_code == 0 and name in table.stdout and "DOWN" in table.stdout

    shown = cli("vm", "show", name, json=True).json()
    assert shown["id"] == vm["id"] and shown["run_state"] == "DOWN"
    assert set(shown) >= {
        "id", "name", "description", "cpu_count", "memory_mb", "custom_properties", "nics",
        "home_domain_id", "run_state", "host_id", "created_at", "active_snapshot_id",
        "in_preview", "locked", "disks",
    }  # fmt: skip
    by_prefix = cli("vm", "show", vm["id"][:8], json=True).json()
    assert by_prefix["id"] == vm["id"]
    table = cli("vm", "show", name)
    assert "made by test" in table.stdout and "os" in table.stdout and "logs" in table.stdout


def test_vm_create_table_output(cli: Cli) -> None:
    name = unique("vmt")
    r = cli("vm", "create", name, "--disk", "a:4M", "--domain", "local")
    assert r.exit_code == 0
    assert f"VM {name} created" in r.stdout and "Disk a (4 MiB) added" in r.stdout


def test_disk_commands(cli: Cli, vm_name: str) -> None:
    disks = cli("disk", "list", vm_name, json=True).json()
    assert sorted(d["alias"] for d in disks) == ["data", "os"]
    assert set(disks[0]) >= {"id", "alias", "kind", "virtual_size", "format", "attachments"}
    table = cli("disk", "list", vm_name)
    assert "os" in table.stdout and "data" in table.stdout and vm_name in table.stdout

    added = cli("disk", "add", vm_name, "scratch:2M", "--domain", "local", json=True)
    assert added.exit_code == 0, added.stderr
    assert added.json()["disk"]["alias"] == "scratch"
    added = cli("disk", "add", vm_name, "boot:4M:raw", "--domain", "local", "--bootable")
    assert added.exit_code == 0 and "Disk boot (4 MiB) added" in added.stdout

    shown = cli("disk", "show", "os", "--vm", vm_name, json=True).json()
    assert shown["alias"] == "os" and shown["attachments"][0]["state"] == "ATTACHED"

    cli("snapshot", "create", vm_name, "-d", "for the tree")
    tree = cli("disk", "tree", vm_name, "os", json=True).json()
    assert tree["disk"]["alias"] == "os" and len(tree["volumes"]) == 2
    assert tree["head_id"] == tree["volumes"][1]["id"]
    assert tree["volumes"][0]["owner"]["description"] == "for the tree"
    drawn = cli("disk", "tree", vm_name, "os")
    assert "*head*" in drawn.stdout and "for the tree" in drawn.stdout


def test_snapshot_commands(cli: Cli, vm_name: str) -> None:
    full = cli("snapshot", "create", vm_name, "-d", "full", json=True)
    assert full.exit_code == 0, full.stderr
    doc = full.json()
    assert doc["job"]["state"] == "SUCCEEDED"
    assert {o["outcome"] for o in doc["job"]["outcomes"]} == {"SNAPSHOTTED"}
    assert doc["snapshot"]["description"] == "full" and len(doc["snapshot"]["disks"]) == 2

    single = cli("snapshot", "create", vm_name, "-d", "os only", "--disk", "os", json=True).json()
    outcomes = {o["disk_alias"]: o["outcome"] for o in single["job"]["outcomes"]}
    assert outcomes == {"os": "SNAPSHOTTED", "data": "NOT_SELECTED"}

    config = cli("snapshot", "create", vm_name, "-d", "config", "--config-only", json=True).json()
    assert config["snapshot"]["disks"] == []

    table = cli("snapshot", "create", vm_name, "-d", "table output")
    assert table.exit_code == 0 and "Snapshot 'table output'" in table.stdout

    listed = cli("snapshot", "list", vm_name, json=True).json()
    assert [s["type"] for s in listed][:2] == ["ACTIVE", "REGULAR"]
    assert [s["description"] for s in listed[1:]] == ["full", "os only", "config", "table output"]
    assert set(listed[0]) == {
        "id", "vm_id", "type", "status", "description", "created_at", "has_memory",
        "config_available", "disks",
    }  # fmt: skip
    drawn = cli("snapshot", "list", vm_name)
    assert "Active VM" in drawn.stdout and "os only" in drawn.stdout
    assert "(config only)" in drawn.stdout

    shown = cli("snapshot", "show", vm_name, "os only", json=True).json()
    assert shown["config"]["vm"]["name"] == vm_name
    assert [d["alias"] for d in shown["config"]["disks"]] == ["os"]
    assert shown["memory"] is None and shown["preview_plan"] is None
    active = cli("snapshot", "show", vm_name, "active", json=True).json()
    assert active["type"] == "ACTIVE"
    by_id = cli("snapshot", "show", vm_name, shown["id"][:8])
    assert by_id.exit_code == 0 and "os only" in by_id.stdout


def test_job_commands(cli: Cli, vm_name: str) -> None:
    created = cli("snapshot", "create", vm_name, "-d", "jobbed", json=True).json()
    job_id = created["job"]["id"]
    jobs = cli("job", "list", "--vm", vm_name, json=True).json()
    assert jobs[0]["id"] == job_id
    assert set(jobs[0]) == {
        "id", "kind", "state", "progress", "vm_id", "target_ids", "request_id", "correlation_id",
        "created_at", "started_at", "ended_at", "result", "outcomes", "memory_outcome", "error",
        "steps",
    }  # fmt: skip
    kinds = cli("job", "list", "--vm", vm_name, "--kind", "add_disk", json=True).json()
    assert {j["kind"] for j in kinds} == {"ADD_DISK"}
    table = cli("job", "list", "--limit", "3")
    assert table.exit_code == 0 and "KIND" in table.stdout

    shown = cli("job", "show", job_id[:8], json=True).json()
    assert shown["id"] == job_id and shown["result"]["snapshot_id"]
    drawn = cli("job", "show", job_id)
    assert "CREATE_SNAPSHOT" in drawn.stdout and "SNAPSHOTTED" in drawn.stdout
    watched = cli("job", "watch", job_id, json=True).json()
    assert watched["state"] == "SUCCEEDED" and watched["progress"] == 100


def test_check(cli: Cli, vm_name: str) -> None:
    doc = cli("check", "--vm", vm_name, "--verify-images", json=True).json()
    assert doc == {"consistent": True, "violations": []}
    table = cli("check")
    assert table.exit_code == 0 and "consistent" in table.stdout


def test_output_option_after_the_command(cli: Cli, vm_name: str) -> None:
    r = cli("vm", "show", vm_name, "-o", "json")
    assert r.json()["name"] == vm_name


def test_vm_update_start_stop(cli: Cli, vm_name: str) -> None:
    r = cli(
        "vm", "update", vm_name, "--cpus", "4", "--memory", "3G", "--description", "changed",
        "--property", "tier=web", "--nic", "eth0,52:54:00:00:00:09,default", json=True,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    vm = r.json()["vm"]
    assert vm["cpu_count"] == 4 and vm["memory_mb"] == 3072 and vm["description"] == "changed"
    assert vm["custom_properties"] == {"tier": "web"}
    assert vm["nics"] == [{"name": "eth0", "mac": "52:54:00:00:00:09", "network": "default"}]
    assert cli("vm", "update", vm_name, "--clear-properties").exit_code == 0
    assert cli("vm", "show", vm_name, json=True).json()["custom_properties"] == {}

    started = cli("vm", "start", vm_name, json=True)
    assert started.json()["job"]["kind"] == "SET_VM_RUN_STATE"
    shown = cli("vm", "show", vm_name, json=True).json()
    assert shown["run_state"] == "UP" and shown["host_id"]
    assert "UP" in cli("vm", "list").stdout
    busy = cli("disk", "add", vm_name, "late:1M", "--domain", "local")
    assert busy.exit_code == 4 and "must be down" in busy.stderr
    stopped = cli("vm", "stop", vm_name)
    assert stopped.exit_code == 0 and "is down" in stopped.stdout
    assert cli("vm", "show", vm_name, json=True).json()["run_state"] == "DOWN"


def test_disk_detach_attach_remove(cli: Cli, vm_name: str) -> None:
    r = cli("disk", "detach", vm_name, "data", json=True)
    assert r.exit_code == 0, r.stderr
    floating = cli("disk", "list", "--floating", json=True).json()
    disk_id = next(d["id"] for d in floating if d["alias"] == "data" and not d["attachments"])
    assert "(floating)" in cli("disk", "list", "--floating").stdout
    attached = cli("disk", "attach", vm_name, disk_id)
    assert attached.exit_code == 0 and f"attached to {vm_name}" in attached.stdout
    again = cli("disk", "attach", vm_name, disk_id, json=True)
    assert again.exit_code == 4 and again.error()["reason"] == "DISK_ALREADY_ATTACHED"
    removed = cli("disk", "remove", "data", "--vm", vm_name, json=True)
    assert removed.exit_code == 0 and removed.json()["job"]["kind"] == "REMOVE_DISK"
    assert [d["alias"] for d in cli("disk", "list", vm_name, json=True).json()] == ["os"]


def test_vm_remove(cli: Cli, vm_name: str) -> None:
    cli("snapshot", "create", vm_name, "-d", "history")
    r = cli("vm", "remove", vm_name, json=True)
    assert r.exit_code == 0, r.stderr
    assert r.json()["job"]["kind"] == "REMOVE_VM" and r.json()["job"]["state"] == "SUCCEEDED"
    assert cli("vm", "show", vm_name).exit_code == 3


def test_vm_update_disk_attributes(cli: Cli, vm_name: str) -> None:
    before = {d["alias"]: d["id"] for d in cli("disk", "list", vm_name, json=True).json()}
    table = cli("vm", "update", vm_name, "--disk", "os:alias=root,bootable=true", "--disk",
                "data:interface=sata")  # fmt: skip
    assert table.exit_code == 0, table.stderr
    assert f"VM {vm_name} updated" in table.stdout
    disks = {d["alias"]: d for d in cli("vm", "show", vm_name, json=True).json()["disks"]}
    assert {alias: d["id"] for alias, d in disks.items()} == {
        "root": before["os"],
        "data": before["data"],
    }
    assert [(a["interface"], a["bootable"]) for a in disks["root"]["attachments"]] == [
        ("VIRTIO", True)
    ]
    assert [(a["interface"], a["bootable"]) for a in disks["data"]["attachments"]] == [
        ("SATA", False)
    ]
    assert "bootable" in cli("vm", "show", vm_name).stdout

    r = cli("vm", "update", vm_name, "--disk", f"{before['os'][:8]}:bootable=no,interface=ide",
            "--cpus", "2", json=True)  # fmt: skip
    assert r.exit_code == 0, r.stderr
    doc = r.json()
    assert doc["job"]["kind"] == "UPDATE_VM" and doc["job"]["state"] == "SUCCEEDED"
    assert doc["vm"]["cpu_count"] == 2
    listed = {d["alias"]: d for d in cli("disk", "list", vm_name, json=True).json()}
    assert listed["root"]["attachments"][0]["interface"] == "IDE"
    assert listed["root"]["attachments"][0]["bootable"] is False
    assert listed["data"]["attachments"][0]["interface"] == "SATA"

    bad_key = cli("vm", "update", vm_name, "--disk", "root:colour=red", json=True)
    assert bad_key.exit_code == 2 and bad_key.error()["reason"] == "INVALID_VALUE"
    bad_bool = cli("vm", "update", vm_name, "--disk", "root:bootable=maybe", json=True)
    assert bad_bool.exit_code == 2 and "maybe" in bad_bool.error()["message"]
    unknown = cli("vm", "update", vm_name, "--disk", "nosuch:alias=x", json=True)
    assert unknown.exit_code == 3 and unknown.error()["reason"] == "NOT_FOUND"
    cli("vm", "update", vm_name, "--disk", "root:bootable=true")
    two_boots = cli("vm", "update", vm_name, "--disk", "data:bootable=true", json=True)
    assert two_boots.exit_code == 4 and two_boots.error()["reason"] == "DISK_BOOT_IN_USE"
    after = {d["alias"]: d for d in cli("disk", "list", vm_name, json=True).json()}
    assert after["data"]["attachments"][0]["bootable"] is False
    assert after["root"]["attachments"][0]["bootable"] is True


def test_lun_disk(cli: Cli, vm_name: str) -> None:
    added = cli("disk", "add", vm_name, "san0", "--lun", "naa.600a0b8000123456", json=True)
    assert added.exit_code == 0, added.stderr
    doc = added.json()
    assert doc["job"]["kind"] == "ADD_DISK" and doc["job"]["state"] == "SUCCEEDED"
    lun = doc["disk"]
    assert (lun["alias"], lun["kind"], lun["lun_id"]) == ("san0", "LUN", "naa.600a0b8000123456")
    assert lun["virtual_size"] is None and lun["domain_id"] is None and lun["format"] is None
    assert lun["head_volume_id"] is None and lun["attachments"][0]["state"] == "ATTACHED"
    table = cli("disk", "add", vm_name, "san1", "--lun", "naa.2", "--shareable")
    assert table.exit_code == 0, table.stderr
    assert f"LUN disk san1 (naa.2) added to {vm_name}" in table.stdout

    listed = {d["alias"]: d for d in cli("disk", "list", vm_name, json=True).json()}
    assert set(listed) == {"os", "data", "san0", "san1"}
    assert listed["san1"]["kind"] == "LUN" and listed["san1"]["shareable"] is True
    drawn = cli("disk", "list", vm_name).stdout
    assert "lun=naa.600a0b8000123456" in drawn and "LUN" in drawn

    # LUN disks are never snapshotted: left out of a full snapshot, refused when named.
    full = cli("snapshot", "create", vm_name, "-d", "all", json=True).json()
    outcomes = {o["disk_alias"]: o["outcome"] for o in full["job"]["outcomes"]}
    assert outcomes == {
        "os": "SNAPSHOTTED",
        "data": "SNAPSHOTTED",
        "san0": "NOT_SELECTED",
        "san1": "NOT_SELECTED",
    }
    assert sorted(d["alias"] for d in full["snapshot"]["disks"]) == ["data", "os"]
    refused = cli("snapshot", "create", vm_name, "-d", "lun only", "--disk", "san0", json=True)
    assert refused.exit_code == 4
    error = refused.error()
    assert error["reason"] == "DISK_SNAPSHOT_NOT_SUPPORTED"
    assert error["metadata"]["disk_aliases"] == "san0"
    descriptions = [s["description"] for s in cli("snapshot", "list", vm_name, json=True).json()]
    assert descriptions[1:] == ["all"]

    sized = cli("disk", "add", vm_name, "san2:1G", "--lun", "naa.3", json=True)
    assert sized.exit_code == 2 and sized.error()["reason"] == "INVALID_VALUE"
    on_domain = cli("disk", "add", vm_name, "san2", "--lun", "naa.3", "--domain", "local")
    assert on_domain.exit_code == 2 and "--domain" in on_domain.stderr
    assert "san2" not in {d["alias"] for d in cli("disk", "list", vm_name, json=True).json()}


def test_correlation_id(cli: Cli) -> None:
    name = unique("corr")
    created = cli("--correlation-id", "batch-7.a", "vm", "create", name, "--disk", "a:4M",
                  "--domain", "local", json=True)  # fmt: skip
    assert created.exit_code == 0, created.stderr
    doc = created.json()
    assert doc["job"]["correlation_id"] == "batch-7.a"
    assert [j["correlation_id"] for j in doc["disk_jobs"]] == ["batch-7.a"]
    shown = cli("job", "show", doc["job"]["id"], json=True).json()
    assert shown["correlation_id"] == "batch-7.a" and shown["kind"] == "CREATE_VM"

    snap = cli("snapshot", "create", name, "-d", "tagged", json=True,
               env={"DISKSNAP_CORRELATION_ID": "from-env"})  # fmt: skip
    assert snap.exit_code == 0, snap.stderr
    job_id = snap.json()["job"]["id"]
    assert cli("job", "show", job_id, json=True).json()["correlation_id"] == "from-env"
    assert "from-env" in cli("job", "show", job_id).stdout

    untagged = cli("vm", "stop", name, json=True).json()
    assert cli("job", "show", untagged["job"]["id"], json=True).json()["correlation_id"] is None

    bad = cli("--correlation-id", "not valid!", "vm", "stop", name, json=True)
    assert bad.exit_code == 2
    assert bad.error()["reason"] == "INVALID_FIELD"
    assert bad.error()["metadata"]["field"] == "envelope.correlation_id"
