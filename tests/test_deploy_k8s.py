"""deploy/k8s/: the manifests validate offline against the Kubernetes schemas, every
process is deployed with probes and resources, and KEDA scales the worker Deployment on
the events queue's RQ list (CONTRACT 10)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from stratum.queue.layout import queue_key
from stratum.settings import Settings, settings_from_env

K8S = Path(__file__).resolve().parent.parent / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"


def _documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs.extend((path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    return docs


def _by_kind(kind: str) -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for _, doc in _documents() if doc["kind"] == kind}


def test_manifests_validate_against_the_kubernetes_schemas():
    checked = 0
    for name, doc in _documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: its schema ships with KEDA, checked below
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']} {doc['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked += 1
    assert checked >= 9


def test_every_process_has_a_deployment_with_resources():
    deployments = _by_kind("Deployment")
    assert set(deployments) == {"stratum-ingest", "stratum-read", "stratum-worker", "stratum-scheduler"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"][0] == "stratum", name
        assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
        refs = {next(iter(e.values()))["name"] for e in container["envFrom"]}
        assert refs == {"stratum-config", "stratum-secrets"}, name
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selector.items() <= dep["spec"]["template"]["metadata"]["labels"].items(), name


@pytest.mark.parametrize(("name", "port"), [("stratum-ingest", 8000), ("stratum-read", 8001)])
def test_apis_probe_health_and_ready_and_have_a_service(name, port):
    (container,) = _by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["ports"][0]["containerPort"] == port
    assert str(port) in container["command"]
    service = _by_kind("Service")[name]
    assert service["spec"]["selector"].items() <= (
        _by_kind("Deployment")[name]["spec"]["template"]["metadata"]["labels"].items())


def test_config_names_only_known_settings():
    known = set(re.findall(r'_(?:env|int|float|list|bool)\("([A-Z_]+)"', inspect.getsource(settings_from_env)))
    config = _by_kind("ConfigMap")["stratum-config"]["data"]
    secrets = _by_kind("Secret")["stratum-secrets"]["stringData"]
    for var in [*config, *secrets]:
        assert var.startswith("STRATUM_") and var.removeprefix("STRATUM_") in known, var
    assert config["STRATUM_QUEUE_NAME"] == Settings().queue_name


def test_keda_scales_the_worker_deployment_on_the_events_queue():
    (scaled,) = _by_kind("ScaledObject").values()
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target["name"] == "stratum-worker" and target["name"] in _by_kind("Deployment")
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == queue_key(Settings().queue_name) == "rq:queue:stratum-events"
    assert int(trigger["metadata"]["listLength"]) > 0
    # KEDA reads metadata values as strings; an unquoted number fails its admission webhook
    assert all(isinstance(v, str) for v in trigger["metadata"].values())
    redis_url = _by_kind("Secret")["stratum-secrets"]["stringData"]["STRATUM_REDIS_URL"]
    assert redis_url == f"redis://{trigger['metadata']['address']}/{trigger['metadata']['databaseIndex']}"
