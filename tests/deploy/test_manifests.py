"""The Kubernetes deployment (deploy/), the Dockerfile and `make image`, checked offline.

Each overlay is rendered with `kubectl kustomize` and validated by scripts/validate-deploy
(strict Kubernetes schemas, strict custom-resource schemas, API-server rules); the tests below
then pin the properties the deployment promises, on the rendered objects.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod", "prod-cert-manager")
PROD_OVERLAYS = ("prod", "prod-cert-manager")
NAMESPACE = "disksnap"
AGENT_UID = 10001

Doc = dict[str, Any]


def _load_validator() -> ModuleType:
    path = REPO_ROOT / "scripts" / "validate-deploy"
    loader = importlib.machinery.SourceFileLoader("validate_deploy", str(path))
    spec = importlib.util.spec_from_loader("validate_deploy", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


validator = _load_validator()


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[Doc]]:
    return {name: validator.render(REPO_ROOT / "deploy" / "overlays" / name) for name in OVERLAYS}


def only(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    spec = validator.pod_spec(doc)
    assert isinstance(spec, dict)
    return spec


def containers(doc: Doc, *, init: bool = True) -> list[Doc]:
    pod = pod_spec(doc)
    result: list[Doc] = list(pod.get("initContainers", [])) if init else []
    return result + list(pod["containers"])


def container(doc: Doc, name: str) -> Doc:
    return next(c for c in containers(doc) if c["name"] == name)


def arg_value(c: Doc, flag: str) -> str:
    args: list[str] = c["args"]
    return args[args.index(flag) + 1]


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    return (d for d in docs if validator.pod_spec(d) is not None)


# --- validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_validation(rendered: dict[str, list[Doc]], overlay: str) -> None:
    assert validator.validate_documents(rendered[overlay]) == []


def test_validate_deploy_script_passes_every_overlay() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/validate-deploy"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["ok", f"deploy/overlays/{name}:"] for name in sorted(OVERLAYS)
    ]


BROKEN_MANIFESTS = {
    "unknown field": (
        """
        apiVersion: apps/v1
        kind: Deployment
        metadata: {name: broken}
        spec:
          selector: {matchLabels: {app: broken}}
          template:
            metadata: {labels: {app: broken}}
            spec:
              containers:
                - name: c
                  image: busybox
                  readinesProbe: {grpc: {port: 7710}}
        """,
        "'readinesProbe' was unexpected",
    ),
    "wrong type": (
        """
        apiVersion: policy/v1
        kind: PodDisruptionBudget
        metadata: {name: broken}
        spec:
          minAvailable: 1
          selector: {matchLabels: [app]}
        """,
        "is not of type 'object'",
    ),
    "unknown kind": (
        """
        apiVersion: example.com/v1
        kind: Widget
        metadata: {name: broken}
        spec: {}
        """,
        "no schema for apiVersion example.com/v1 kind Widget",
    ),
    "unknown custom resource field": (
        """
        apiVersion: cert-manager.io/v1
        kind: Certificate
        metadata: {name: broken}
        spec:
          secretName: s
          issuerRef: {name: ca}
          dnsName: [node-a]
        """,
        "'dnsName' was unexpected",
    ),
    "two volume sources": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: broken}
        spec:
          containers: [{name: c, image: busybox}]
          volumes:
            - name: v
              emptyDir: {}
              hostPath: {path: /tmp}
        """,
        "needs exactly one source",
    ),
    "undefined variable in args": (
        """
        apiVersion: v1
        kind: Pod
        metadata: {name: broken}
        spec:
          containers:
            - name: c
              image: busybox
              args: ["--host-name", "$(NODE_NAM)"]
              env:
                - name: NODE_NAME
                  valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
        """,
        "$(NODE_NAM) in command/args is not defined",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MANIFESTS))
def test_validator_rejects_a_broken_manifest(tmp_path: Path, case: str) -> None:
    manifest, expected = BROKEN_MANIFESTS[case]
    (tmp_path / "broken.yaml").write_text(textwrap.dedent(manifest))
    (tmp_path / "kustomization.yaml").write_text("resources: [broken.yaml]\n")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "validate-deploy"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"FAIL {tmp_path}"), proc.stdout
    assert expected in proc.stdout


def test_validator_reports_a_kustomize_error(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "validate-deploy"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "kubectl kustomize failed" in proc.stdout


# --- engine -------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_engine_runs_two_replicas_behind_a_pdb(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    engine = only(docs, "Deployment", "disksnap-engine")
    assert engine["spec"]["replicas"] == 2
    pod_labels = engine["spec"]["template"]["metadata"]["labels"]
    pdb = only(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    service = only(docs, "Service", "disksnap-engine")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert [p["port"] for p in service["spec"]["ports"]] == [7700, 7702]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_engine_waits_for_the_migration_job(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    job = only(docs, "Job", "disksnap-migrate")
    migrate = container(job, "migrate")
    assert migrate["command"] == ["disksnap-engine"]
    assert migrate["args"][0] == "migrate"
    assert arg_value(migrate, "--db") == "$(DISKSNAP_DB_URL)"
    engine = only(docs, "Deployment", "disksnap-engine")
    (wait,) = pod_spec(engine)["initContainers"]
    script = " ".join(wait["command"])
    assert re.search(r"until disksnap-engine migrate .*--check", script), script
    # The Job, the wait and the engine all read the same database.
    db_refs = {
        env["valueFrom"]["secretKeyRef"]["name"]
        for c in (migrate, wait, container(engine, "engine"))
        for env in c["env"]
        if env["name"] == "DISKSNAP_DB_URL"
    }
    assert len(db_refs) == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_engine_command_line(rendered: dict[str, list[Doc]], overlay: str) -> None:
    engine = container(only(rendered[overlay], "Deployment", "disksnap-engine"), "engine")
    assert engine["command"] == ["disksnap-engine"]
    assert engine["args"][0] == "serve"
    assert arg_value(engine, "--listen") == "0.0.0.0:7700"
    assert arg_value(engine, "--agent-listen") == "0.0.0.0:7702"
    assert arg_value(engine, "--health-listen") == "0.0.0.0:7710"
    mounts = {m["mountPath"] for m in engine["volumeMounts"]}
    for flag in ("--tls-cert", "--tls-key", "--tls-ca", "--auth-token-file"):
        assert str(Path(arg_value(engine, flag)).parent) in mounts


# --- agent --------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_runs_only_on_labelled_hypervisors(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    agent = only(rendered[overlay], "DaemonSet", "disksnap-agent")
    pod = pod_spec(agent)
    assert pod["nodeSelector"] == {"disksnap.io/hypervisor": "true"}
    assert {
        "key": "disksnap.io/hypervisor",
        "operator": "Exists",
        "effect": "NoSchedule",
    } in pod["tolerations"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_storage_is_on_the_host(rendered: dict[str, list[Doc]], overlay: str) -> None:
    agent_ds = only(rendered[overlay], "DaemonSet", "disksnap-agent")
    volumes = {v["name"]: v for v in pod_spec(agent_ds)["volumes"]}
    agent = container(agent_ds, "agent")
    mounts = {m["mountPath"]: m["name"] for m in agent["volumeMounts"]}
    for flag in ("--root", "--state-dir"):
        path = arg_value(agent, flag)
        volume = volumes[mounts[path]]
        assert volume["hostPath"]["path"] == path
        assert volume["hostPath"]["type"] == "DirectoryOrCreate"
    assert arg_value(agent, "--root") == "/var/lib/disksnap/storage"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_identity_is_the_node_name(rendered: dict[str, list[Doc]], overlay: str) -> None:
    agent = container(only(rendered[overlay], "DaemonSet", "disksnap-agent"), "agent")
    env = {e["name"]: e for e in agent["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert arg_value(agent, "--host-name") == "$(NODE_NAME)"
    assert arg_value(agent, "--engine") == "disksnap-engine:7702"
    assert arg_value(agent, "--advertise") == "$(POD_IP):7701"
    assert arg_value(agent, "--tls-cert") == "/etc/disksnap/tls/$(NODE_NAME).crt"
    assert arg_value(agent, "--tls-key") == "/etc/disksnap/tls/$(NODE_NAME).key"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_agent_host_dir_preparation_is_minimal(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    agent_ds = only(rendered[overlay], "DaemonSet", "disksnap-agent")
    (init,) = pod_spec(agent_ds)["initContainers"]
    ctx = init["securityContext"]
    assert ctx["runAsUser"] == 0
    assert ctx["capabilities"] == {"drop": ["ALL"], "add": ["CHOWN"]}
    assert f"chown {AGENT_UID}:{AGENT_UID}" in init["command"][-1]
    assert "-R" not in init["command"][-1]
    assert container(agent_ds, "agent")["securityContext"]["runAsUser"] == AGENT_UID


# --- every workload -------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize(
    ("kind", "name", "serving", "health"),
    [("Deployment", "disksnap-engine", 7700, 7710), ("DaemonSet", "disksnap-agent", 7701, 7711)],
)
def test_grpc_probes_use_the_plaintext_health_port(
    rendered: dict[str, list[Doc]], overlay: str, kind: str, name: str, serving: int, health: int
) -> None:
    workload = only(rendered[overlay], kind, name)
    main = pod_spec(workload)["containers"][0]
    assert arg_value(main, "--health-listen") == f"0.0.0.0:{health}"
    assert arg_value(main, "--listen") == f"0.0.0.0:{serving}"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert main[probe]["grpc"] == {"port": health}, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    for workload in workloads(rendered[overlay]):
        for c in containers(workload):
            for bound in ("requests", "limits"):
                assert set(c["resources"][bound]) >= {"cpu", "memory"}, (workload, c["name"], bound)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_with_least_privilege(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    for workload in workloads(rendered[overlay]):
        pod = pod_spec(workload)
        where = workload["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        for c in containers(workload):
            ctx = c["securityContext"]
            what = f"{where}/{c['name']}"
            assert ctx["allowPrivilegeEscalation"] is False, what
            assert ctx["readOnlyRootFilesystem"] is True, what
            assert ctx["capabilities"]["drop"] == ["ALL"], what
            assert not ctx.get("privileged"), what
            if (where, c["name"]) == ("disksnap-agent", "prepare-host-dirs"):
                continue  # checked in test_agent_host_dir_preparation_is_minimal
            assert "add" not in ctx["capabilities"], what
            non_root = ctx.get("runAsNonRoot", pod["securityContext"].get("runAsNonRoot"))
            assert non_root is True, what


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_everything_lives_in_the_disksnap_namespace(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    for doc in rendered[overlay]:
        if doc["kind"] == "Namespace":
            assert doc["metadata"]["name"] == NAMESPACE
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, validator.object_name(doc)


# --- database -----------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", PROD_OVERLAYS)
def test_prod_reads_an_external_database_from_a_secret(
    rendered: dict[str, list[Doc]], overlay: str
) -> None:
    docs = rendered[overlay]
    assert not [d for d in docs if d["kind"] in ("StatefulSet", "PersistentVolumeClaim")]
    assert not [d for d in docs if d["kind"] == "Secret"], "prod ships no secret material"
    engine = container(only(docs, "Deployment", "disksnap-engine"), "engine")
    (db,) = [e for e in engine["env"] if e["name"] == "DISKSNAP_DB_URL"]
    assert db["valueFrom"] == {"secretKeyRef": {"name": "disksnap-db", "key": "url"}}
    for c in containers(only(docs, "Deployment", "disksnap-engine")):
        assert c["image"].startswith("registry.example.com/disksnap/engine:")


def test_dev_runs_postgres_in_a_statefulset_with_a_pvc(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    postgres = only(docs, "StatefulSet", "disksnap-postgres")
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container(postgres, "postgres")["volumeMounts"]}
    assert claim["metadata"]["name"] in mounts
    assert only(docs, "Service", "disksnap-postgres")["spec"]["clusterIP"] == "None"
    engine = container(only(docs, "Deployment", "disksnap-engine"), "engine")
    (db,) = [e for e in engine["env"] if e["name"] == "DISKSNAP_DB_URL"]
    secret = only(docs, "Secret", db["valueFrom"]["secretKeyRef"]["name"])
    import base64

    url = base64.b64decode(secret["data"]["url"]).decode()
    assert url.startswith("postgresql+psycopg://") and "@disksnap-postgres:5432/" in url


# --- certificates ---------------------------------------------------------------------------


def test_cert_manager_issues_one_certificate_per_agent_node(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod-cert-manager"]
    certificates = [d for d in docs if d["kind"] == "Certificate"]
    agent_certs = [c for c in certificates if c["metadata"]["name"].startswith("disksnap-agent-")]
    assert agent_certs
    expected_files: dict[str, str] = {}
    for cert in agent_certs:
        spec = cert["spec"]
        (node,) = spec["dnsNames"]  # SPEC 7: the agent's DNS SAN equals its host name
        assert spec["commonName"] == node
        assert cert["metadata"]["name"] == f"disksnap-agent-{node}"
        assert spec["secretName"] == f"disksnap-agent-tls-{node}"
        assert {"server auth", "client auth"} <= set(spec["usages"])
        expected_files[spec["secretName"]] = node
    agent_ds = only(docs, "DaemonSet", "disksnap-agent")
    (tls,) = [v for v in pod_spec(agent_ds)["volumes"] if v["name"] == "tls"]
    mounted: dict[str, str] = {}
    for source in tls["projected"]["sources"]:
        secret = source["secret"]
        items = {i["key"]: i["path"] for i in secret["items"]}
        if items == {"ca.crt": "ca.crt"}:
            continue
        node = expected_files.get(secret["name"], "?")
        assert items == {"tls.crt": f"{node}.crt", "tls.key": f"{node}.key"}, secret
        mounted[secret["name"]] = node
    assert mounted == expected_files


def test_cert_manager_engine_certificate_feeds_the_engine(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod-cert-manager"]
    cert = only(docs, "Certificate", "disksnap-engine")["spec"]
    assert "disksnap-engine" in cert["dnsNames"]
    assert {"server auth", "client auth"} <= set(cert["usages"])
    engine = only(docs, "Deployment", "disksnap-engine")
    (tls,) = [v for v in pod_spec(engine)["volumes"] if v["name"] == "tls"]
    assert tls["secret"]["secretName"] == cert["secretName"]
    issuer = cert["issuerRef"]["name"]
    assert only(docs, "Issuer", issuer)["spec"]["ca"]["secretName"] == "disksnap-ca"


def test_dev_secrets_script_makes_per_node_agent_certificates(tmp_path: Path) -> None:
    from cryptography import x509

    out = tmp_path / "secrets"
    subprocess.run(
        [str(REPO_ROOT / "deploy" / "dev-secrets.sh"), str(out), "hv-a", "hv-b"],
        check=True,
        capture_output=True,
    )
    docs = [d for d in yaml.safe_load_all((out / "secrets.yaml").read_text()) if d]
    assert validator.validate_documents(docs) == []
    assert sorted(d["metadata"]["name"] for d in docs) == [
        "disksnap-agent-tls",
        "disksnap-engine-auth",
        "disksnap-engine-tls",
    ]
    agent_keys = set(only(docs, "Secret", "disksnap-agent-tls")["data"])
    assert agent_keys == {"ca.crt", "hv-a.crt", "hv-a.key", "hv-b.crt", "hv-b.key"}
    for node in ("hv-a", "hv-b"):
        cert = x509.load_pem_x509_certificate((out / f"agent-{node}.crt").read_bytes())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [node]
    import hashlib

    token = (out / "admin-token").read_text()
    assert (out / "tokens").read_text() == f"{hashlib.sha256(token.encode()).hexdigest()} admin\n"
    assert stat.S_IMODE((out / "ca.key").stat().st_mode) == 0o600


# --- images ---------------------------------------------------------------------------------


def _dockerfile_stages() -> dict[str, tuple[str, list[str]]]:
    """stage name -> (parent, instructions), continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    stages: dict[str, tuple[str, list[str]]] = {}
    current: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)$", line, re.IGNORECASE)
        if match:
            current = []
            stages[match.group(2)] = (match.group(1), current)
        else:
            current.append(line)
    return stages


def _lineage(stages: dict[str, tuple[str, list[str]]], name: str) -> list[str]:
    instructions: list[str] = []
    while name in stages:
        parent, own = stages[name]
        instructions = own + instructions
        name = parent
    return instructions


def test_dockerfile_has_engine_and_agent_targets_running_as_non_root() -> None:
    stages = _dockerfile_stages()
    assert {"builder", "engine", "agent"} <= set(stages)
    for target in ("engine", "agent"):
        lineage = _lineage(stages, target)
        users = [i for i in lineage if i.upper().startswith("USER ")]
        assert users and users[-1] == f"USER {AGENT_UID}:{AGENT_UID}", target
        assert any(i.startswith("COPY --from=builder /opt/disksnap") for i in lineage)
        assert not any("[dev]" in i for i in lineage), "no dev dependencies in images"
        assert any(i.startswith("ENTRYPOINT") and f"disksnap-{target}" in i for i in lineage)
    assert any("qemu-utils" in i for i in _lineage(stages, "agent"))
    assert not any("qemu-utils" in i for i in _lineage(stages, "engine"))
    assert not any("[dev]" in i for i in stages["builder"][1])


def test_dockerignore_sends_only_the_sources() -> None:
    lines = [
        line
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "disksnap", "engine_svc", "storage_agent"}


def _run_build_image(docker: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DOCKER": docker, "TAG": "t1", "IMAGE_REPO": "example/ds"}
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-image")],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )


def _fake_docker(tmp_path: Path, info_exit: int) -> Path:
    log = tmp_path / "docker.log"
    fake = tmp_path / "docker"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {log}\n[ "$1" = info ] && exit {info_exit}\nexit 0\n')
    fake.chmod(0o755)
    return fake


def test_make_image_skips_cleanly_without_a_container_engine(tmp_path: Path) -> None:
    missing = _run_build_image(str(tmp_path / "no-such-docker"), tmp_path)
    assert missing.returncode == 0
    assert "skipped: no container engine" in missing.stdout
    no_daemon = _run_build_image(str(_fake_docker(tmp_path, info_exit=1)), tmp_path)
    assert no_daemon.returncode == 0
    assert "skipped: no container engine" in no_daemon.stdout
    assert (tmp_path / "docker.log").read_text() == "info\n"


def test_make_image_builds_both_targets_when_an_engine_answers(tmp_path: Path) -> None:
    proc = _run_build_image(str(_fake_docker(tmp_path, info_exit=0)), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "docker.log").read_text().splitlines() == [
        "info",
        "build --target engine --tag example/ds/engine:t1 .",
        "build --target agent --tag example/ds/agent:t1 .",
    ]
