"""k8s/ and rbac/ against the real API server: every overlay and rbac/ pass a
server-side dry run (admission included: PodSecurity "restricted" warns about
nothing), the rendered objects carry the hardening, probes and limits the pods
rely on, the pieces agree with each other and with the code (settings, lease
name, Hazelcast address and cluster name), the Hazelcast config loads in
Hazelcast 5.6 itself, and rbac/ grants the ServiceAccount exactly the Lease
calls the elector makes.

Rendering uses the kustomize built into kubectl; JSON comes from kubectl too, so
no YAML library is needed. To apply into a test namespace, a kustomization in
tmp_path wraps the target and changes only the namespace (checked below), the
way a user would move a deployment to another namespace.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from aggregator.wiring.settings import Settings, load_settings
from infra import hazelcast as hz_infra
from infra.maven import require_java
from infra.process import InfraError
from tests.fixtures.kube import KubeApi
from tests.fixtures.requirements import server_missing

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = {"dev": REPO / "k8s" / "overlays" / "dev", "prod": REPO / "k8s" / "overlays" / "prod"}
TARGETS = {**OVERLAYS, "rbac": REPO / "rbac"}
DECLARED_NAMESPACE = {"dev": "stream-aggregator-dev", "prod": "stream-aggregator"}
TOPIC_PARTITIONS = 6  # the default of `aggregator produce --partitions` and the README
LEASE = "stream-aggregator"
SERVICE_ACCOUNT = "stream-aggregator"
# Deliberately not in the ConfigMap: the pod supplies them (downward API, ServiceAccount).
FROM_THE_POD = {"AGG_LEASE_NAMESPACE", "AGG_POD_NAME"}
# Credentials and file paths belong in a Secret or a volume, if anywhere.
NOT_CONFIGURATION = re.compile(r"SASL|SSL_|PASSWORD|KUBECONFIG")
HAZELCAST_IMAGE = "hazelcast/hazelcast:"

Obj = dict[str, Any]


# --- helpers -------------------------------------------------------------------------


def json_documents(text: str) -> list[Obj]:
    """kubectl prints one JSON document per object, one after another."""
    decoder = json.JSONDecoder()
    found: list[Obj] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return found
        document, index = decoder.raw_decode(text, index)
        if document.get("kind") == "List":
            found.extend(document["items"])
        else:
            found.append(document)


def moved_to(namespace: str, target: Path, where: Path) -> Path:
    """A kustomization that builds ``target`` with everything in ``namespace``."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "resources:\n"
        f"  - {os.path.relpath(target, where)}\n"
        "transformers:\n"
        "  - |-\n"
        "    apiVersion: builtin\n"
        "    kind: NamespaceTransformer\n"
        "    metadata:\n"
        "      name: namespace\n"
        f"      namespace: {namespace}\n"
        "    setRoleBindingSubjects: allServiceAccounts\n",
        encoding="utf-8",
    )
    return where


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}: {done.stderr.strip()}"
    return done.stdout


def kustomize(kube_api: KubeApi, directory: Path) -> str:
    return ok(kube_api.kubectl("kustomize", str(directory)))


def render(kube_api: KubeApi, directory: Path, tmp: Path) -> list[Obj]:
    """The objects ``directory`` builds, as JSON (client-side: no namespace needed)."""
    manifest = tmp / "rendered.yaml"
    manifest.write_text(kustomize(kube_api, directory), encoding="utf-8")
    shown = kube_api.kubectl("create", "--dry-run=client", "-o", "json", "-f", str(manifest))
    return json_documents(ok(shown))


def one(objects: list[Obj], kind: str, name: str | None = None) -> Obj:
    matches = [
        o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def container(workload: Obj, name: str) -> Obj:
    containers: list[Obj] = workload["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == name)


def config_data(objects: list[Obj], prefix: str) -> dict[str, str]:
    """The data of the generated ConfigMap whose name starts with ``prefix``."""
    maps = [
        o
        for o in objects
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith(prefix + "-")
    ]
    assert len(maps) == 1, [m["metadata"]["name"] for m in maps]
    data: dict[str, str] = maps[0]["data"]
    return data


def without_namespace_lines(manifest: str) -> str:
    return re.sub(r"(?m)^(\s*)namespace: \S+$", r"\1namespace: <ns>", manifest)


def readme_variables() -> set[str]:
    table = [
        line
        for line in (REPO / "README.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("| `AGG_")
    ]
    return {name for line in table for name in re.findall(r"`(AGG_[A-Z0-9_]+)`", line)}


@pytest.fixture(scope="module")
def rendered(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    return {
        name: render(kube_api, directory, tmp_path_factory.mktemp(name))
        for name, directory in OVERLAYS.items()
    }


# --- the API server accepts them as they are -----------------------------------------------


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_applies_with_a_server_side_dry_run_under_restricted_pod_security(
    kube_api: KubeApi, kube_namespace: str, tmp_path: Path, target: str
) -> None:
    # Workloads are checked against the namespace's "warn" level on create.
    ok(
        kube_api.kubectl(
            "label", "namespace", kube_namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/warn=restricted",
        )
    )  # fmt: skip
    wrapper = moved_to(kube_namespace, TARGETS[target], tmp_path / "moved")
    # The wrapper changes nothing but the namespace.
    assert without_namespace_lines(kustomize(kube_api, wrapper)) == without_namespace_lines(
        kustomize(kube_api, TARGETS[target])
    )

    started = time.monotonic()
    applied = kube_api.kubectl("apply", "--dry-run=server", "-k", str(wrapper))
    took = time.monotonic() - started
    out = ok(applied)
    assert "PodSecurity" not in applied.stderr, applied.stderr
    assert "Warning" not in applied.stderr, applied.stderr
    lines = out.strip().splitlines()
    objects = render(kube_api, wrapper, tmp_path)
    assert len(lines) == len(objects), out
    assert all(line.endswith("created (server dry run)") for line in lines), out
    assert took < 30, took


# --- what the pods run with ------------------------------------------------------------


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_aggregator_pod_is_hardened_probed_and_bounded(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = one(objects, "Deployment", "stream-aggregator")
    pod = deployment["spec"]["template"]["spec"]
    aggregator = container(deployment, "aggregator")

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    hardened = aggregator["securityContext"]
    assert hardened["allowPrivilegeEscalation"] is False
    assert hardened["readOnlyRootFilesystem"] is True
    assert hardened["capabilities"] == {"drop": ["ALL"]}
    # The only writable path is an emptyDir on /tmp.
    mounts = {m["mountPath"]: m["name"] for m in aggregator["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    assert next(v for v in pod["volumes"] if v["name"] == "tmp").get("emptyDir") is not None

    assert aggregator["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert aggregator["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert aggregator["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert aggregator["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert aggregator["args"] == ["run"]

    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in aggregator["env"]}
    assert env == {
        "POD_NAME": "metadata.name",
        "POD_NAMESPACE": "metadata.namespace",
        "POD_UID": "metadata.uid",
    }
    # A leader proven dead by its container's exit (docs/architecture.md) must be its
    # container's init: the process is PID 1 of a PID namespace of its own.
    assert "shareProcessNamespace" not in pod
    assert "command" not in aggregator  # the image's entrypoint: aggregator itself
    [source] = aggregator["envFrom"]
    assert source["configMapRef"]["name"].startswith("stream-aggregator-config-")

    for kind in ("requests", "limits"):
        assert set(aggregator["resources"][kind]) == {"cpu", "memory"}

    # preStop sleep + graceful stop (flush 0.5 s, commit, release, close) within the grace.
    pre_stop = aggregator["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["terminationGracePeriodSeconds"]
    settings = config_data(objects, "stream-aggregator-config")
    worst_lease_call = float(settings["AGG_RENEW_DEADLINE_SECONDS"]) / 2
    assert pre_stop + float(settings["AGG_FLUSH_INTERVAL_SECONDS"]) + worst_lease_call + 10 <= grace
    assert grace <= 60  # a stuck pod must not hold a rollout for minutes

    assert pod["serviceAccountName"] == SERVICE_ACCOUNT
    assert pod["automountServiceAccountToken"] is True


def test_prod_spreads_the_pods_and_dev_stays_small(rendered: dict[str, list[Obj]]) -> None:
    prod = rendered["prod"]
    deployment = one(prod, "Deployment", "stream-aggregator")
    assert deployment["spec"]["replicas"] == 3
    spec = deployment["spec"]["template"]["spec"]
    assert spec["affinity"]["podAntiAffinity"]
    assert {c["topologyKey"] for c in spec["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone"
    }
    members = one(prod, "StatefulSet", "hazelcast")
    assert members["spec"]["replicas"] == 3
    assert members["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]

    dev = rendered["dev"]
    assert one(dev, "Deployment", "stream-aggregator")["spec"]["replicas"] == 1
    hpa = one(dev, "HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 2)
    assert one(dev, "StatefulSet", "hazelcast")["spec"]["replicas"] == 2

    def memory_limit(objects: list[Obj]) -> str:
        limit: str = container(one(objects, "Deployment"), "aggregator")["resources"]["limits"][
            "memory"
        ]
        return limit

    # 512Mi OOM-killed two followers at 1,000 events/s each when a Hazelcast member
    # restarted in the soak (docs/reliability.md)
    assert (memory_limit(dev), memory_limit(prod)) == ("1Gi", "1Gi")


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_autoscaling_stays_within_the_partitions_and_disruptions_go_one_by_one(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    hpa = one(objects, "HorizontalPodAutoscaler", "stream-aggregator")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "stream-aggregator",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"] <= TOPIC_PARTITIONS
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    # The starting count is inside the autoscaler's range.
    deployment = one(objects, "Deployment", "stream-aggregator")["spec"]
    assert hpa["spec"]["minReplicas"] <= deployment["replicas"] <= hpa["spec"]["maxReplicas"]
    # A rollout replaces one pod at a time, and each new pod settles (joins the
    # consumer group, warms up) before the next old one, perhaps the leader, goes.
    assert deployment["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    assert deployment["minReadySeconds"] >= 10

    for name in ("stream-aggregator", "hazelcast"):
        pdb = one(objects, "PodDisruptionBudget", name)
        assert pdb["apiVersion"] == "policy/v1"
        assert pdb["spec"]["maxUnavailable"] == 1
        assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": name}

    service = one(objects, "Service", "stream-aggregator")
    assert service["spec"]["ports"][0]["targetPort"] == "http"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_network_policies_admit_only_the_service_port_and_the_aggregator_to_hazelcast(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    aggregator_pods = one(objects, "Deployment", "stream-aggregator")["spec"]["template"]
    members = one(objects, "StatefulSet", "hazelcast")["spec"]["template"]

    own = one(objects, "NetworkPolicy", "stream-aggregator")["spec"]
    assert (
        own["podSelector"]["matchLabels"].items() <= aggregator_pods["metadata"]["labels"].items()
    )
    assert own["policyTypes"] == ["Ingress"]
    [rule] = own["ingress"]
    assert "from" not in rule  # the Service's clients may be anywhere
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    ports = container(one(objects, "Deployment", "stream-aggregator"), "aggregator")["ports"]
    assert [p["name"] for p in ports] == ["http"]

    guarded = one(objects, "NetworkPolicy", "hazelcast")["spec"]
    assert guarded["podSelector"]["matchLabels"].items() <= members["metadata"]["labels"].items()
    [rule] = guarded["ingress"]
    sources = [peer["podSelector"]["matchLabels"] for peer in rule["from"]]
    assert sources == [
        {"app.kubernetes.io/name": "stream-aggregator"},
        {"app.kubernetes.io/name": "hazelcast"},
    ]
    assert all(set(peer) == {"podSelector"} for peer in rule["from"])  # this namespace only
    assert rule["ports"] == [{"port": "hazelcast", "protocol": "TCP"}]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_hazelcast_runs_restricted_with_its_own_discovery_rbac(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    members = one(objects, "StatefulSet", "hazelcast")
    pod = members["spec"]["template"]["spec"]
    member = container(members, "hazelcast")
    assert member["image"] == f"{HAZELCAST_IMAGE}{hz_infra.JARS.version}"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert member["securityContext"]["readOnlyRootFilesystem"] is True
    assert member["securityContext"]["allowPrivilegeEscalation"] is False
    assert member["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert member["readinessProbe"]["httpGet"]["port"] == "hazelcast"

    headless = one(objects, "Service", "hazelcast")
    assert headless["spec"]["clusterIP"] == "None"
    assert members["spec"]["serviceName"] == "hazelcast"

    role = one(objects, "Role", "hazelcast-discovery")
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs == {"get", "list"}
    binding = one(objects, "RoleBinding", "hazelcast-discovery")
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": pod["serviceAccountName"],
            "namespace": DECLARED_NAMESPACE[overlay],
        }
    ]
    # Discovery reads this namespace only: nothing cluster-wide.
    assert not [o for o in objects if o["kind"] in {"ClusterRole", "ClusterRoleBinding"}]


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_every_object_and_binding_lands_in_the_overlays_namespace(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    namespace = DECLARED_NAMESPACE[overlay]
    objects = rendered[overlay]
    assert {o["metadata"]["namespace"] for o in objects} == {namespace}
    for binding in (o for o in objects if o["kind"] == "RoleBinding"):
        assert {s["namespace"] for s in binding["subjects"]} == {namespace}


# --- the pieces agree with each other and with the code ----------------------------------


def test_the_image_and_the_pod_spec_agree(rendered: dict[str, list[Obj]]) -> None:
    """The Dockerfile cannot be built here; what the pod spec assumes of it can be read."""
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    [user] = re.findall(r"(?m)^USER (\d+):(\d+)$", dockerfile)
    [exposed] = re.findall(r"(?m)^EXPOSE (\d+)$", dockerfile)
    assert re.search(r'(?m)^ENTRYPOINT \["aggregator"\]$', dockerfile)
    assert re.search(r'(?m)^CMD \["run"\]$', dockerfile)
    assert re.search(r"(?m)^ARG PYTHON_IMAGE=python:3\.11-slim", dockerfile)
    for objects in rendered.values():
        deployment = one(objects, "Deployment", "stream-aggregator")
        pod = deployment["spec"]["template"]["spec"]["securityContext"]
        assert (str(pod["runAsUser"]), str(pod["runAsGroup"])) == user
        [port] = container(deployment, "aggregator")["ports"]
        assert str(port["containerPort"]) == exposed
    # The build context holds what the Dockerfile copies, and nothing else.
    ignored = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignored[ignored.index("*") + 1 :][:5] == [
        "!pyproject.toml",
        "!README.md",
        "!aggregator/",
        "!dashboard/",
        "!hatch_build.py",
    ]
    assert re.search(r"(?m)^COPY pyproject\.toml README\.md hatch_build\.py \./$", dockerfile)
    assert "AGG_NATIVE=required pip wheel" in dockerfile


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_config_map_is_a_valid_configuration_for_the_code(
    rendered: dict[str, list[Obj]], overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = config_data(rendered[overlay], "stream-aggregator-config")
    # Every key is a real setting; every documented setting the pod does not
    # supply itself is there.
    fields = {f"AGG_{name.upper()}" for name in Settings.model_fields}
    assert set(settings) <= fields, set(settings) - fields
    documented = {v for v in readme_variables() - FROM_THE_POD if not NOT_CONFIGURATION.search(v)}
    assert documented <= set(settings), documented - set(settings)
    assert not [name for name in settings if NOT_CONFIGURATION.search(name)]
    assert not FROM_THE_POD & set(settings)
    # The overlay replaced the base's placeholder broker.
    assert ".invalid" not in settings["AGG_KAFKA_BOOTSTRAP_SERVERS"]

    for name in list(os.environ):
        if name.startswith("AGG_"):
            monkeypatch.delenv(name)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("POD_NAME", "stream-aggregator-7d9f-abcde")
    loaded = load_settings()
    assert loaded.pod_name == "stream-aggregator-7d9f-abcde"
    assert loaded.http_port == 8000
    assert loaded.lease_namespace is None  # the pod's own namespace


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_the_aggregator_finds_hazelcast_and_its_lease(
    rendered: dict[str, list[Obj]], overlay: str
) -> None:
    objects = rendered[overlay]
    settings = config_data(objects, "stream-aggregator-config")
    [member] = settings["AGG_HAZELCAST_MEMBERS"].split(",")
    host, port = member.rsplit(":", 1)
    headless = one(objects, "Service", "hazelcast")
    assert host == headless["metadata"]["name"]
    assert int(port) == headless["spec"]["ports"][0]["port"]
    hazelcast_yaml = config_data(objects, "hazelcast-config")["hazelcast.yaml"]
    assert f"cluster-name: {settings['AGG_HAZELCAST_CLUSTER_NAME']}\n" in hazelcast_yaml
    assert f"service-name: {host}\n" in hazelcast_yaml

    lease_role = one(objects, "Role", "stream-aggregator-lease")
    named = [rule for rule in lease_role["rules"] if rule.get("resourceNames")]
    assert [rule["resourceNames"] for rule in named] == [[settings["AGG_LEASE_NAME"]]]


# --- the Hazelcast config, loaded by Hazelcast itself ------------------------------------

CHECK_CONFIG_JAVA = """\
import com.hazelcast.config.Config;
import java.util.TreeMap;
import java.util.TreeSet;

public class CheckConfig {
    public static void main(String[] args) throws Exception {
        Config config = Config.loadFromFile(new java.io.File(args[0]));
        var join = config.getNetworkConfig().getJoin();
        System.out.println("cluster-name=" + config.getClusterName());
        System.out.println("kubernetes=" + join.getKubernetesConfig().isEnabled());
        System.out.println("kubernetes.properties="
            + new TreeMap<>(join.getKubernetesConfig().getProperties()));
        System.out.println("multicast=" + join.getMulticastConfig().isEnabled());
        @SuppressWarnings("removal")
        var rest = config.getNetworkConfig().getRestApiConfig();
        var groups = new TreeSet<>(rest.getEnabledGroups());
        System.out.println("rest=" + rest.isEnabled() + " " + groups);
        System.out.println("shutdown=" + config.getProperty("hazelcast.shutdownhook.policy"));
        for (int i = 1; i < args.length; i++) {
            var map = config.getMapConfig(args[i]);
            System.out.println("map " + args[i] + "=" + map.getBackupCount()
                + "/" + map.getAsyncBackupCount());
        }
    }
}
"""


@pytest.fixture(scope="module")
def hazelcast_jar() -> Path:
    try:
        require_java()
    except InfraError as error:
        server_missing("Java for the Hazelcast config check", str(error))
    if not hz_infra.COMPONENT.installed():
        server_missing(
            f"Hazelcast {hz_infra.JARS.version}", "run `python -m infra install hazelcast`"
        )
    return hz_infra.JARS.lib / f"hazelcast-{hz_infra.JARS.version}.jar"


@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_hazelcast_loads_the_config_map_with_kubernetes_discovery_and_backups(
    rendered: dict[str, list[Obj]], overlay: str, hazelcast_jar: Path, tmp_path: Path
) -> None:
    shipped = tmp_path / "hazelcast.yaml"
    shipped.write_text(config_data(rendered[overlay], "hazelcast-config")["hazelcast.yaml"])
    checker = tmp_path / "CheckConfig.java"
    checker.write_text(CHECK_CONFIG_JAVA)
    maps = ["partials", "partials-by-minute", "results", "members"]
    done = subprocess.run(
        [
            require_java(), "-Dagg.namespace=ns-from-the-pod", "-cp", str(hazelcast_jar),
            str(checker), str(shipped), *maps,
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = dict(line.split("=", 1) for line in done.stdout.splitlines())
    settings = config_data(rendered[overlay], "stream-aggregator-config")
    assert shown["cluster-name"] == settings["AGG_HAZELCAST_CLUSTER_NAME"]
    assert shown["kubernetes"] == "true"
    assert shown["multicast"] == "false"
    assert shown["kubernetes.properties"] == (
        "{expose-externally=false, namespace=ns-from-the-pod, "
        "resolve-not-ready-addresses=true, service-name=hazelcast}"
    )
    assert shown["rest"] == "true [HEALTH_CHECK]"  # the probes, and nothing else
    assert shown["shutdown"] == "GRACEFUL"
    for name in maps:
        assert shown[f"map {name}"] == "1/0", name


# --- what rbac/ lets the ServiceAccount do ------------------------------------------------


@pytest.fixture
def rbac_applied(kube_api: KubeApi, kube_namespace: str, tmp_path: Path) -> str:
    """rbac/ applied for real into the test namespace (removed with it); its name."""
    ok(kube_api.kubectl("apply", "-k", str(moved_to(kube_namespace, REPO / "rbac", tmp_path))))
    return kube_namespace


def can_i(kube_api: KubeApi, namespace: str, *args: str) -> bool:
    who = f"--as=system:serviceaccount:{namespace}:{SERVICE_ACCOUNT}"
    done = kube_api.kubectl("auth", "can-i", *args, who)
    answer = done.stdout.strip()
    assert answer in {"yes", "no"}, (args, done.stdout, done.stderr)
    return answer == "yes"


def eventually_allowed(kube_api: KubeApi, namespace: str, *args: str) -> None:
    """RBAC reaches the authorizer through an informer: allow a short lag."""
    deadline = time.monotonic() + 10
    while not can_i(kube_api, namespace, *args):
        assert time.monotonic() < deadline, f"still not allowed: {args}"
        time.sleep(0.2)


def test_the_service_account_may_use_its_lease_and_nothing_else(
    kube_api: KubeApi, rbac_applied: str
) -> None:
    ns = rbac_applied
    other = "kube-public"
    eventually_allowed(kube_api, ns, "get", f"leases.coordination.k8s.io/{LEASE}", "-n", ns)
    allowed = [
        ("get", f"leases.coordination.k8s.io/{LEASE}", "-n", ns),
        ("update", f"leases.coordination.k8s.io/{LEASE}", "-n", ns),
        ("watch", f"leases.coordination.k8s.io/{LEASE}", "-n", ns),
        ("create", "leases.coordination.k8s.io", "-n", ns),
        # the holder's pod: kubelet's report of its container's exit
        ("get", "pods", "-n", ns),
        ("watch", "pods", "-n", ns),
    ]
    denied = [
        ("delete", "pods", "-n", ns),
        ("list", "pods", "-n", ns),
        ("update", "pods", "--subresource=status", "-n", ns),
        ("patch", "pods", "-n", ns),
        ("get", "pods", "--subresource=log", "-n", ns),
        ("create", "pods", "--subresource=exec", "-n", ns),
        ("get", "secrets", "-n", ns),
        ("list", "secrets", "-n", ns),
        ("get", "configmaps", "-n", ns),
        ("update", "leases.coordination.k8s.io/someone-elses", "-n", ns),
        ("get", "leases.coordination.k8s.io/someone-elses", "-n", ns),
        ("list", "leases.coordination.k8s.io", "-n", ns),
        ("patch", f"leases.coordination.k8s.io/{LEASE}", "-n", ns),
        ("delete", f"leases.coordination.k8s.io/{LEASE}", "-n", ns),
        ("create", "events", "-n", ns),
        # another namespace: nothing at all
        ("get", f"leases.coordination.k8s.io/{LEASE}", "-n", other),
        ("update", f"leases.coordination.k8s.io/{LEASE}", "-n", other),
        ("create", "leases.coordination.k8s.io", "-n", other),
        ("get", "secrets", "-n", other),
        ("list", "namespaces"),
        ("get", "nodes"),
    ]
    answers = {args: can_i(kube_api, ns, *args) for args in allowed + denied}
    assert [args for args in allowed if not answers[args]] == []
    assert [args for args in denied if answers[args]] == []


def test_the_service_accounts_own_token_sees_exactly_the_lease_rules(
    kube_api: KubeApi, rbac_applied: str, tmp_path: Path
) -> None:
    """With a TokenRequest token (not impersonation): the rules the API server
    reports for the namespace are the Lease rules plus the self-review ones every
    authenticated user has."""
    ns = rbac_applied
    token = kube_api.service_account_token(ns, SERVICE_ACCOUNT, create=False)
    config = kube_api.token_kubeconfig(tmp_path / "sa.kubeconfig", token, namespace=ns)
    deadline = time.monotonic() + 10
    while True:
        done = kube_api.kubectl("auth", "can-i", "get", f"leases/{LEASE}", kubeconfig=config)
        if done.stdout.strip() == "yes":
            break
        assert time.monotonic() < deadline, done.stderr
        time.sleep(0.2)
    assert kube_api.kubectl("auth", "can-i", "get", "secrets", kubeconfig=config).stdout == "no\n"

    with kube_api.token_client(token) as as_pod:
        review = client.AuthorizationV1Api(as_pod).create_self_subject_rules_review(
            client.V1SelfSubjectRulesReview(spec=client.V1SelfSubjectRulesReviewSpec(namespace=ns))
        )
    assert review.status is not None
    rules = {
        (
            tuple(sorted(rule.api_groups or [])),
            tuple(sorted(rule.resources or [])),
            tuple(sorted(rule.resource_names or [])),
            tuple(sorted(rule.verbs)),
        )
        for rule in review.status.resource_rules
        if not all(r.startswith("selfsubject") for r in rule.resources or [])
    }
    assert rules == {
        (("coordination.k8s.io",), ("leases",), (), ("create",)),
        (("coordination.k8s.io",), ("leases",), (LEASE,), ("get", "update", "watch")),
        (("",), ("pods",), (), ("get", "watch")),
    }
