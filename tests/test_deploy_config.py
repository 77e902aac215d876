"""deploy/, docker/ and docker-compose.yml are consistent with each other and with the service:
promtool accepts the Prometheus configurations and rules and every alert has a unit test; every
IRTRACK_* variable they set is a setting; the images install the pinned torch and every package;
compose merges the files; the Kubernetes manifests match the API schemas of the versions named.
(The live checks: Prometheus scraping a running API and worker and the dashboard's queries in
test_scale_out.py; the images built and the compose stack run in test_containers.py.)"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from scale_out_support import REPO, require_binary

from service.settings import Settings

PROMETHEUS = REPO / "deploy" / "prometheus"
K8S = REPO / "deploy" / "k8s"


def promtool(*args: str) -> str:
    result = subprocess.run(
        [require_binary("promtool"), *args], capture_output=True, text=True, cwd=PROMETHEUS
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def known_setting(variable: str) -> bool:
    name = variable.removeprefix("IRTRACK_").lower()
    return variable.startswith("IRTRACK_") and name in Settings.model_fields


def k8s_documents() -> list[dict[str, Any]]:
    """The objects ``kubectl apply -k deploy/k8s`` creates."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return [
        doc
        for name in kustomization["resources"]
        for doc in yaml.safe_load_all((K8S / name).read_text())
        if doc is not None
    ]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, (kind, name)
    return matches[0]


def test_promtool_accepts_the_configurations_and_the_rules() -> None:
    for config in ("prometheus.yml", "prometheus-kubernetes.yml"):
        assert "SUCCESS" in promtool("check", "config", config)
    assert "SUCCESS: 7 rules found" in promtool("check", "rules", "alerts.yml")


def test_promtool_unit_tests_cover_every_alert() -> None:
    promtool("test", "rules", "alerts_test.yml")
    alerts = {
        rule["alert"]
        for group in yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    }
    firing = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == firing


def test_dashboard_uses_the_provisioned_datasource_and_every_panel_has_queries() -> None:
    datasource = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"][0]
    provider = yaml.safe_load(
        (REPO / "deploy/grafana/provisioning/dashboards/irtrack.yml").read_text()
    )["providers"][0]
    dashboard = json.loads((REPO / "deploy/grafana/dashboards/irtrack.json").read_text())
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"], panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


def test_compose_runs_the_five_services_with_keys_and_scrape_targets_that_exist() -> None:
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"api", "worker", "redis", "prometheus", "grafana"}
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert all(known_setting(variable) for variable in environment), environment
        assert environment["IRTRACK_API_KEYS"] and environment["IRTRACK_REDIS_URL"]
    assert services["api"]["command"] == ["irtrack", "serve"]
    assert services["worker"]["command"] == ["irtrack", "worker"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    targets = {
        job["job_name"]: (sd["names"][0], sd["port"])
        for job in scrape
        for sd in job["dns_sd_configs"]
    }
    assert targets == {
        "irtrack-api": ("api", int(services["api"]["environment"]["IRTRACK_PORT"])),
        "irtrack-worker": ("worker", int(services["worker"]["environment"]["IRTRACK_PORT"])),
    }
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert not source.startswith(".") or (REPO / source).exists(), volume


def compose_command() -> list[str]:
    """``docker compose`` where the plugin is installed, else podman-compose (./dev.sh installs it
    into .venv, and podman, which it needs)."""
    docker = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if docker.returncode == 0:
        return ["docker", "compose"]
    podman_compose = Path(sys.executable).with_name("podman-compose")
    if not podman_compose.exists() or shutil.which("podman") is None:
        pytest.skip("neither docker compose nor podman-compose with podman is installed")
    return [str(podman_compose)]


def test_compose_files_merge_and_the_gpu_workers_build_the_cuda_image() -> None:
    """The files as compose merges them; with docker-compose.gpu.yml the worker's build keeps the
    base file's target, which docker/Dockerfile.cuda must therefore have."""
    merged = {}
    for files in (["docker-compose.yml"], ["docker-compose.yml", "docker-compose.gpu.yml"]):
        args = [arg for f in files for arg in ("-f", f)]
        result = subprocess.run(
            [*compose_command(), *args, "config"], cwd=REPO, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        merged[len(files)] = yaml.safe_load(result.stdout)["services"]["worker"]
    assert merged[1]["image"] == "irtrack:cpu" and merged[2]["image"] == "irtrack:cuda"
    build = merged[2]["build"]
    dockerfile = REPO / build["context"] / build["dockerfile"]  # the context comes out absolute
    assert re.search(rf"^FROM \S+ AS {build['target']}$", dockerfile.read_text(), re.M), build


def test_kubernetes_workers_request_a_gpu_and_every_deployment_has_probes() -> None:
    for name, port in (("irtrack-api", "http"), ("irtrack-worker", "metrics")):
        pod = k8s_object("Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert [p["name"] for p in container["ports"]] == [port]
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["resources"]["requests"]["cpu"]
        assert all(known_setting(e["name"]) for e in container["env"])
    worker = k8s_object("Deployment", "irtrack-worker")["spec"]["template"]["spec"]
    resources = worker["containers"][0]["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    config = k8s_object("ConfigMap", "irtrack-config")["data"]
    assert all(known_setting(variable) for variable in config), config
    assert "IRTRACK_API_KEYS" in k8s_object("Secret", "irtrack-api-keys")["stringData"]
    kinds = {doc["kind"] for doc in k8s_documents()}
    assert kinds == {
        "Namespace",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
    }


def test_kubernetes_autoscaler_and_prometheus_refer_to_what_exists() -> None:
    autoscaler = k8s_object("HorizontalPodAutoscaler", "irtrack-worker")["spec"]
    assert autoscaler["scaleTargetRef"]["name"] == "irtrack-worker"
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["external"]
    assert autoscaler["metrics"][0]["external"]["metric"]["name"] == rule["name"]["as"]
    assert 'irtrack_queue_depth{stage="redis"}' in rule["seriesQuery"]
    scrape = yaml.safe_load((PROMETHEUS / "prometheus-kubernetes.yml").read_text())
    for job in scrape["scrape_configs"]:
        (sd,) = job["dns_sd_configs"]
        service_name = sd["names"][0].split(".")[0]
        service = k8s_object("Service", service_name)["spec"]
        assert service["clusterIP"] == "None" and service["publishNotReadyAddresses"]
        assert service["ports"][0]["port"] == sd["port"]


def kubernetes_versions() -> list[str]:
    """The oldest version kustomization.yaml names, and the newest the validator knows."""
    named = re.search(r"Kubernetes (\d+\.\d+) or newer", (K8S / "kustomization.yaml").read_text())
    assert named is not None
    return [f"{named.group(1)}.0", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("version", kubernetes_versions())
def test_kubernetes_manifests_match_the_api_schemas(version: str) -> None:
    """Every object against the OpenAPI schemas of that Kubernetes version, strictly (an unknown
    field is an error), with the validator's own check that it does refuse one."""
    for document in k8s_documents():
        kubernetes_validate.validate(document, version, strict=True)
    misspelt = copy.deepcopy(k8s_object("Deployment", "irtrack-worker"))
    misspelt["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)


def test_the_kustomization_sets_every_irtrack_image_the_deployments_run() -> None:
    """The Deployments name irtrack's images by placeholders without a tag, which
    kustomization.yaml turns into registry images: each one set, none left over."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    placeholders = {
        container["image"]
        for doc in k8s_documents()
        if doc["kind"] == "Deployment"
        for container in doc["spec"]["template"]["spec"]["containers"]
        if ":" not in container["image"]
    }
    assert placeholders == {image["name"] for image in kustomization["images"]}
    assert placeholders == {"irtrack-api", "irtrack-cuda"}


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_images_install_the_pinned_torch_and_every_package(dockerfile: str) -> None:
    text = (REPO / "docker" / dockerfile).read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    pin = re.search(r'"(torch==[^"]+)"', pyproject)
    assert pin is not None and re.search(rf'"{re.escape(pin.group(1))}(\+\w+)?"', text)
    assert "COPY . " in text and "[worker]" in text
    packages = re.search(r"include = \[([^\]]*)\]", pyproject)
    assert packages is not None
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "tests" in ignored
    assert not set(re.findall(r'"(\w+)\*"', packages.group(1))) & set(ignored)


def test_the_api_image_installs_the_api_extra_without_torch() -> None:
    """The stages of docker/Dockerfile.cpu that docker-compose.yml builds (tests/test_containers.py
    builds and runs them): the API on the [api] extra alone, the worker on [worker]."""
    stages = re.findall(
        r"^FROM (\S+) AS (\S+)\n(.*?)(?=^FROM |\Z)",
        (REPO / "docker" / "Dockerfile.cpu").read_text(),
        re.M | re.S,
    )
    base_of = {name: base for base, name, _ in stages}
    text_of = {name: text for _, name, text in stages}
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]
    assert compose["api"]["build"]["target"] == "api" and base_of["api"] == "api-deps"
    assert '"/tmp/irtrack[api]"' in text_of["api-deps"] and "torch" not in text_of["api-deps"]
    assert "find_spec('torch') is None" in text_of["api"]
    assert compose["worker"]["build"]["target"] == "worker" and base_of["worker"] == "worker-deps"
    assert '"/tmp/irtrack[worker]"' in text_of["worker-deps"]


def test_deploy_paths_named_in_the_docs_exist() -> None:
    text = "".join(path.read_text() for path in [REPO / "README.md", *(REPO / "docs").glob("*.md")])
    for path in set(re.findall(r"`((?:deploy|docker)/[\w./-]+|docker-compose[\w.-]*\.yml)`", text)):
        assert Path(REPO / path).exists(), path


def test_redis_url_comes_from_irtrack_redis_url_or_else_redis_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("IRTRACK_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert Settings().redis_url is None  # the embedded queue
    monkeypatch.setenv("REDIS_URL", "redis://shared:6379/0")
    assert Settings().redis_url == "redis://shared:6379/0"
    monkeypatch.setenv("IRTRACK_REDIS_URL", "redis://irtrack:6379/1")
    assert Settings().redis_url == "redis://irtrack:6379/1"
