"""k8s/, offline: every manifest valid against the Kubernetes schemas, and true to the code.

kubernetes-validate ships the OpenAPI-derived JSON schemas per Kubernetes
version; strict mode also rejects unknown fields (a typo'd key is an error).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pgcast.keys import DEFAULT_PARTITIONS
from tests.unit.test_deploy_facts import (
    ROOT,
    TOOL_VARS,
    console_scripts,
    gateway_env,
    gunicorn_settings,
    listener_env,
    load_yaml_docs,
    migrate_env,
    routes,
)

K8S = ROOT / "k8s"
VERSIONS = ("1.29.0", "1.33.0")  # oldest supported upstream when written, and a recent one
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def all_docs() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_yaml_docs(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    for doc in all_docs():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise LookupError(f"no {kind}/{name} in k8s/")


def pod(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = find("Deployment", name)["spec"]["template"]["spec"]
    return spec


def container_env(container: dict[str, Any]) -> dict[str, str]:
    """The variables a container gets: env entries and every key of its envFrom ConfigMaps."""
    env = {e["name"]: str(e.get("value", "<secret>")) for e in container.get("env", [])}
    for source in container.get("envFrom", []):
        env.update(find("ConfigMap", source["configMapRef"]["name"])["data"])
    return env


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_is_valid_kubernetes(path: Path, version: str) -> None:
    """Each document validates strictly against the schemas of that Kubernetes version."""
    for doc in load_yaml_docs(path):
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_rejects_a_typo() -> None:
    """The validator has teeth: an unknown field in a probe is an error."""
    doc = copy.deepcopy(find("Deployment", "pgcast-gateway"))
    probe = doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_kustomization_lists_every_manifest() -> None:
    """kustomization.yaml names exactly the manifests in k8s/, and a namespace for them."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    assert sorted(kustomization["resources"]) == sorted(p.name for p in MANIFESTS)
    assert find("Namespace", kustomization["namespace"])
    assert [i["name"] for i in kustomization["images"]] == ["pgcast"]


def test_kinds_present() -> None:
    """Namespace, ConfigMap, Secret, Deployments, Service, Ingress, HPA, PDB, NetworkPolicy."""
    kinds = {doc["kind"] for doc in all_docs()}
    assert kinds >= {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert find("Deployment", "pgcast-listener")["spec"]["replicas"] == 2
    assert find("Deployment", "pgcast-gateway")["spec"]["replicas"] == 4


def test_selectors_match_pod_labels() -> None:
    """Services, PDBs, NetworkPolicies and the HPA point at pods that exist."""
    labels = {
        name: find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        for name in ("pgcast-gateway", "pgcast-listener")
    }
    for doc in all_docs():
        spec = doc.get("spec", {})
        selector = spec.get("selector") or spec.get("podSelector")
        if doc["kind"] in ("Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"):
            wanted = selector.get("matchLabels", selector) if selector else {}
            if wanted:
                assert any(wanted.items() <= pl.items() for pl in labels.values()), doc
    hpa = find("HorizontalPodAutoscaler", "pgcast-gateway")["spec"]["scaleTargetRef"]
    assert find(hpa["kind"], hpa["name"])
    assert find("HorizontalPodAutoscaler", "pgcast-gateway")["spec"]["minReplicas"] >= 4


def test_ingress_routes_ws_and_sse_with_tls_and_long_timeouts() -> None:
    """The Ingress terminates TLS, sends /ws and /sse to the gateway Service, keeps sockets."""
    ingress = find("Ingress", "pgcast")
    notes = ingress["metadata"]["annotations"]
    assert int(notes["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(notes["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert notes["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    assert ingress["spec"]["tls"][0]["secretName"]
    paths = ingress["spec"]["rules"][0]["http"]["paths"]
    served = routes("gateway/*.py")
    assert {"/ws", "/sse"} <= {p["path"] for p in paths} <= served
    service = find("Service", "pgcast-gateway")
    for p in paths:
        backend = p["backend"]["service"]
        assert backend["name"] == "pgcast-gateway"
        assert backend["port"]["name"] in {port["name"] for port in service["spec"]["ports"]}


def test_gateway_pod_hardening_probes_and_shutdown() -> None:
    """Non-root, read-only root, no escalation, no capabilities; probes; grace > drain."""
    spec = pod("pgcast-gateway")
    (container,) = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"/readyz", "/healthz"} <= routes("gateway/*.py")
    env = container_env(container)
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["PGCAST_PORT"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    gunicorn = gunicorn_settings(env)
    assert gunicorn["graceful_timeout"] > float(env["PGCAST_DRAIN_SECONDS"])
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + gunicorn["graceful_timeout"]


def test_listener_pod_probes_and_migration() -> None:
    """Listeners migrate first (init container), expose /healthz and /metrics on 8081."""
    spec = pod("pgcast-listener")
    (init,) = spec["initContainers"]
    assert init["command"] == ["pgcast-migrate"]
    (container,) = spec["containers"]
    env = container_env(container)
    (port,) = container["ports"]
    assert str(port["containerPort"]) == env["PGCAST_LISTENER_PORT"]
    assert container["livenessProbe"]["httpGet"]["path"] in routes("listener/*.py")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


@pytest.mark.parametrize(
    ("deployment", "container", "readers"),
    [
        ("pgcast-gateway", "gateway", gateway_env),
        ("pgcast-listener", "listener", listener_env),
        ("pgcast-listener", "migrate", migrate_env),
    ],
)
def test_every_variable_is_one_the_code_reads(
    deployment: str, container: str, readers: Any
) -> None:
    """Each variable a container gets is read by that process; secrets come from the Secret."""
    spec = pod(deployment)
    (found,) = [
        c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == container
    ]
    assert set(container_env(found)) - readers() - TOOL_VARS == set()
    secret = find("Secret", "pgcast-secrets")["stringData"]
    for entry in found.get("env", []):
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "pgcast-secrets"
        assert ref["key"] in secret
        assert "EXAMPLE" in secret[ref["key"]]  # the shipped values are marked as examples


def test_commands_are_real_console_scripts() -> None:
    """Every container runs a declared console script or gunicorn on the gateway app."""
    scripts = console_scripts()
    for name in ("pgcast-gateway", "pgcast-listener"):
        spec = pod(name)
        for container in spec["containers"] + spec.get("initContainers", []):
            argv = container["command"]
            if argv[0] == "gunicorn":
                assert argv[-1] == "gateway.app:gunicorn_app"
                assert (ROOT / argv[argv.index("--config") + 1]).is_file()
            else:
                assert argv[0] in scripts


REPLICA_SETTINGS = {
    "PGCAST_REDIS_MIN_REPLICAS",
    "PGCAST_REDIS_REPLICA_TIMEOUT",
    "PGCAST_REDIS_REPLICA_POLICY",
}


CAPTURE_SETTINGS = {"PGCAST_CAPTURE", "PGCAST_WAL_SLOT"}


def test_configmap_documents_the_redis_replica_settings() -> None:
    """The listener ConfigMap carries the Redis replica settings (and the capture mode's)
    as comments: variables the listener reads, that become string values of that ConfigMap
    when uncommented."""
    text = (K8S / "configmap.yaml").read_text()
    commented = set(re.findall(r"^\s*#\s*(PGCAST_[A-Z_]+):", text, re.M))
    assert commented == REPLICA_SETTINGS | CAPTURE_SETTINGS | {"PGCAST_REDIS_PARTITIONS"}
    assert commented <= listener_env()
    uncommented = re.sub(
        r"^(\s*)#\s*(PGCAST_(?:REDIS|CAPTURE|WAL)[A-Z_]*:)", r"\1\2", text, flags=re.M
    )
    docs = [doc for doc in yaml.safe_load_all(uncommented) if doc is not None]
    (listener,) = [d for d in docs if d["metadata"]["name"] == "pgcast-listener"]
    wanted = REPLICA_SETTINGS | CAPTURE_SETTINGS
    assert {k: type(v) for k, v in listener["data"].items() if k in wanted} == dict.fromkeys(
        wanted, str
    )
    assert "redis+sentinel://" in text


def test_configmap_documents_the_cluster_settings() -> None:
    """The redis+cluster:// URL form is documented; PGCAST_REDIS_PARTITIONS is a comment
    in the ConfigMap both Deployments read (listeners and gateways must agree), a string
    of the code's default once uncommented, and a variable both read."""
    text = (K8S / "configmap.yaml").read_text()
    assert "redis+cluster://" in text
    uncommented = re.sub(r"^(\s*)#\s*(PGCAST_REDIS_PARTITIONS:)", r"\1\2", text, flags=re.M)
    docs = [doc for doc in yaml.safe_load_all(uncommented) if doc is not None]
    (common,) = [d for d in docs if d["metadata"]["name"] == "pgcast-common"]
    assert common["data"]["PGCAST_REDIS_PARTITIONS"] == str(DEFAULT_PARTITIONS)
    assert "PGCAST_REDIS_PARTITIONS" in listener_env() & gateway_env()
    for name in ("pgcast-gateway", "pgcast-listener"):
        (container,) = [c for c in pod(name)["containers"] if c["name"] == name.split("-")[1]]
        sources = {s["configMapRef"]["name"] for s in container["envFrom"]}
        assert "pgcast-common" in sources, name


@pytest.mark.parametrize("name", ["pgcast-gateway", "pgcast-listener"])
def test_redis_egress_covers_cluster_nodes_not_their_bus(name: str) -> None:
    """Both open egress to Redis' client port (a cluster's nodes answer there too) and
    Sentinel's; never to the cluster bus (port + 10000), which clients never use."""
    ports = {
        p["port"]
        for rule in find("NetworkPolicy", name)["spec"]["egress"]
        for p in rule.get("ports", [])
    }
    assert {6379, 26379} <= ports
    assert 16379 not in ports
    text = (K8S / "networkpolicy.yaml").read_text()
    assert "cluster bus" in text
