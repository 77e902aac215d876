"""The deployment built and run for real with podman: the images of docker/ built from locally made
Debian bases, docker-compose.yml started with podman-compose (Redis, the API, two CPU workers,
Prometheus), real thermal frames streamed through it, then a fault drill: a worker container killed
mid-stream and Redis restarted.

No container registry is reachable from the CI machines, so the bases the Dockerfiles start FROM
are made here (``debootstrap --variant=minbase bookworm``, imported under the Docker Hub names),
Redis and Prometheus come from stand-in images of Debian's packages (tests/containers/), and pip
inside the builds uses this machine's pip configuration (index, certificate bundle, its find-links
folders served over loopback HTTP: the torch CPU wheel lies there) through build secrets. A compose
override (written by the test) puts every container on the host's network on free loopback ports,
names the two workers and starts the second worker as a service of its own (two replicas on the
host's network would take the same port). Grafana's image cannot be had here: it is not started
(its provisioning is checked by test_deploy_config.py).

Images and the bases stay in podman's storage, so a rerun rebuilds only what changed; on a fresh
machine everything is built. The figures are printed as they come (image sizes, seconds to build,
seconds from ``up`` to ready, frames sent / answered / lost, seconds to recover), and written as a
markdown report to $IRTRACK_CONTAINERS_REPORT when it is set (docs/results/containers.md feeds
docs/deployment.md). Run it alone: ``./dev.sh test -m containers``.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import redis
import redis.asyncio
import torch
import yaml
from conftest import require_path
from scale_out_support import (
    REPO,
    PrometheusClient,
    StreamRun,
    assert_one_answer_per_frame_in_order,
    figures_line,
    free_port,
    prometheus_config,
    require_binary,
    run_with_fault,
    stream_ids_per_owner,
    wait_for,
    websocket_stream,
)
from service_support import assert_frames_accounted, running_server

from bench.common import machine_info
from cli.demo import DEMO_CLIP, VIDEO_DIR
from clients.sources import open_source
from service.codecs import decode_rle
from service.settings import Settings
from service.transport.redis_wire import RedisKeys, live_workers

pytestmark = [pytest.mark.containers, pytest.mark.timeout(1800)]

PROJECT = "irtrack-container-test"
CONTAINERS = REPO / "tests" / "containers"
COMPOSE_FILE = REPO / "docker-compose.yml"
GPU_COMPOSE_FILE = REPO / "docker-compose.gpu.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SETTINGS = COMPOSE["services"]["worker"]["environment"]
SHARDS = int(SETTINGS["IRTRACK_REDIS_SHARDS"])
LEASE_TTL_S = float(SETTINGS["IRTRACK_REDIS_LEASE_TTL_S"])
STAND_INS = {"redis": "redis.Containerfile", "prometheus": "prometheus.Containerfile"}
WORKERS = ("worker", "worker-2")  # their host names, the first part of a shard lease's holder
SERVICES = ("redis", "api", *WORKERS, "prometheus")
FRAMES_CHECKED = 16  # real 640x512 frames per stream compared with the library's answers
# The drill's frames, reduced so that two CPU workers keep up with its eight streams.
DRILL_SIZE = (160, 128)
DRILL_PERIOD_S = 0.25
SETTLED_S = 2.0  # the same shard holders this long before streams start: four lease renewals
REPORT: list[str] = []


# --- podman --------------------------------------------------------------------------------------
def podman_environment() -> dict[str, str]:
    """podman, buildah and podman-compose configured for this machine (tests/containers/), and
    images built in Docker's format, which keeps their HEALTHCHECK (OCI's drops it)."""
    return {
        **os.environ,
        "CONTAINERS_CONF": str(CONTAINERS / "containers.conf"),
        "BUILDAH_FORMAT": "docker",
    }


def podman(
    *args: str, timeout_s: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [require_binary("podman"), *args],
        env=podman_environment(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if check:
        assert result.returncode == 0, (
            f"podman {' '.join(args)}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        )
    return result


def image_id(name: str) -> str | None:
    result = podman("image", "inspect", "--format", "{{.Id}}", name, check=False)
    return result.stdout.strip() if result.returncode == 0 else None


def docker_hub_name(name: str) -> str:
    """The full name Docker gives a short image name (python:3.11 -> docker.io/library/python:3.11)."""
    first = name.split("/")[0]
    if "/" in name and ("." in first or ":" in first or first == "localhost"):
        return name
    return f"docker.io/{name}" if "/" in name else f"docker.io/library/{name}"


def debian_bases() -> list[str]:
    """The Debian images docker/Dockerfile.cpu and the stand-ins start FROM."""
    dockerfile = (REPO / "docker" / "Dockerfile.cpu").read_text()
    python = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)
    assert python is not None
    stand_ins = [
        re.search(r"^FROM (\S+)$", (CONTAINERS / name).read_text(), re.M)
        for name in STAND_INS.values()
    ]
    return sorted({docker_hub_name(m.group(1)) for m in [python, *stand_ins] if m is not None})


def make_debian_bases(workdir: Path) -> float | None:
    """Bookworm (minbase, with Python 3.11 and venv) under every base name not already present;
    the seconds it took, or None when all were there."""
    missing = [name for name in debian_bases() if image_id(name) is None]
    if not missing:
        return None
    started = time.monotonic()
    root = workdir / "bookworm"
    subprocess.run(
        [
            require_binary("debootstrap"),
            "--variant=minbase",
            "--include=python3,python3-venv",
            "bookworm",
            str(root),
        ],
        check=True,
        capture_output=True,
        timeout=900,
    )
    for trimmed in (
        "var/cache/apt/archives",
        "var/lib/apt/lists",
        "usr/share/doc",
        "usr/share/man",
    ):
        shutil.rmtree(
            root / trimmed
        )  # what Docker's slim images leave out too (apt recreates the lists)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
    imported = subprocess.run(
        [require_binary("podman"), "import", "--change", 'CMD ["python3"]', "-", missing[0]],
        stdin=tar.stdout,
        env=podman_environment(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert tar.wait() == 0 and imported.returncode == 0, imported.stderr
    for name in missing[1:]:
        podman("tag", missing[0], name)
    shutil.rmtree(root)
    return time.monotonic() - started


# --- pip inside the builds: this machine's configuration, through build secrets -------------------
def host_pip_config() -> dict[str, list[str]]:
    """``pip config list`` of the test's interpreter: option -> values (files and environment)."""
    listing = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    options: dict[str, list[str]] = {}
    for line in listing.splitlines():
        key, _, value = line.partition("=")
        options.setdefault(key.split(".", 1)[1], []).extend(ast.literal_eval(value).split())
    return options


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per request on the test's output."""


@contextmanager
def served_folder(folder: Path) -> Iterator[str]:
    """The folder's files over HTTP on a free loopback port (a pip find-links page); its URL."""
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        thread.join()


@contextmanager
def pip_build_arguments(workdir: Path) -> Iterator[list[str]]:
    """``podman build`` arguments that give pip in the build this machine's index, certificate
    bundle and find-links folders. Where a find-links folder holds a torch CPU wheel, torch comes
    from there (its dependencies from the index) instead of PyTorch's index."""
    host = host_pip_config()
    folders = [Path(f) for f in host.get("find-links", []) if Path(f).is_dir()]
    indexes = [u for u in host.get("index-url", []) if u.startswith(("http://", "https://"))]
    extra = [u for u in host.get("extra-index-url", []) if u.startswith(("http://", "https://"))]
    with ExitStack() as stack:
        urls = [stack.enter_context(served_folder(folder)) for folder in folders]
        lines = ["[global]"]
        arguments: list[str] = []
        if urls:
            lines.append(f"find-links = {' '.join(urls)}")
        if indexes:
            lines.append(f"index-url = {indexes[0]}")
        if extra:
            lines.append(f"extra-index-url = {' '.join(extra)}")
        if host.get("cert"):
            lines.append("cert = /run/secrets/pip-cert")
            arguments += ["--secret", f"id=pip-cert,src={host['cert'][0]}"]
        if any(folder.glob("torch-*+cpu-cp311-*.whl") for folder in folders):
            index = indexes[0] if indexes else "https://pypi.org/simple"
            arguments += ["--build-arg", f"TORCH_INDEX_URL={index}"]
        (workdir / "pip.conf").write_text("\n".join(lines) + "\n")
        yield ["--secret", f"id=pip.conf,src={workdir / 'pip.conf'}", *arguments]


# --- the images ----------------------------------------------------------------------------------
@dataclass
class Built:
    image: str
    seconds: float
    size_bytes: int
    rebuilt: bool  # False when every layer came from podman's cache

    def figures(self) -> str:
        how = "built" if self.rebuilt else "unchanged, from the layer cache"
        return f"{self.image} {self.size_bytes / 1e6:.0f} MB ({how} in {self.seconds:.1f} s)"


def build_image(image: str, containerfile: Path, context: Path, *arguments: str) -> Built:
    before = image_id(image)
    started = time.monotonic()
    podman(
        "build",
        "--network=host",
        "-f",
        str(containerfile),
        "-t",
        image,
        *arguments,
        str(context),
        timeout_s=1500,
    )
    seconds = time.monotonic() - started
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
    return Built(image, seconds, size, image_id(image) != before)


def build_service(service: dict[str, Any], pip_arguments: list[str]) -> Built:
    """A compose service's image, built as its ``build`` section says."""
    build = service["build"]
    target = ["--target", build["target"]] if "target" in build else []
    context = REPO / build["context"]
    return build_image(
        service["image"], context / build["dockerfile"], context, *target, *pip_arguments
    )


def gpu_worker_service() -> dict[str, Any]:
    """The worker as docker-compose.gpu.yml makes it (its build section merged into the base's)."""
    base = COMPOSE["services"]["worker"]
    gpu = yaml.safe_load(GPU_COMPOSE_FILE.read_text())["services"]["worker"]
    return {**base, **gpu, "build": {**base["build"], **gpu["build"]}}


def cuda_base() -> str:
    dockerfile = (REPO / gpu_worker_service()["build"]["dockerfile"]).read_text()
    tag = re.search(r"^ARG CUDA_IMAGE=(\S+)$", dockerfile, re.M)
    assert tag is not None and "FROM nvidia/cuda:${CUDA_IMAGE}" in dockerfile
    return docker_hub_name(f"nvidia/cuda:{tag.group(1)}")


@dataclass
class Images:
    api: Built
    worker: Built
    cuda_worker: Built | None  # None where no CUDA base image can be had
    stand_ins: dict[str, Built]  # compose service -> the stand-in image run instead of its own
    base_seconds: float | None  # None when the Debian bases were there already


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    require_binary("podman")
    workdir = tmp_path_factory.mktemp("images")
    base_seconds = make_debian_bases(workdir)
    with pip_build_arguments(workdir) as pip_arguments:
        api = build_service(COMPOSE["services"]["api"], pip_arguments)
        worker = build_service(COMPOSE["services"]["worker"], pip_arguments)
        has_cuda_base = image_id(cuda_base()) is not None
        cuda_worker = build_service(gpu_worker_service(), pip_arguments) if has_cuda_base else None
    stand_ins = {
        service: build_image(
            f"localhost/irtrack-test/{service}:bookworm", CONTAINERS / containerfile, CONTAINERS
        )
        for service, containerfile in STAND_INS.items()
        if image_id(docker_hub_name(COMPOSE["services"][service]["image"])) is None
    }
    # The images these builds replaced, and their layers; the new ones' layers stay as the cache.
    podman("image", "prune", "--force", timeout_s=600)
    return Images(api, worker, cuda_worker, stand_ins, base_seconds)


# --- the stack -----------------------------------------------------------------------------------
def podman_compose() -> str:
    """podman-compose 1.6 or newer (Debian's 1.0.3 exits 0 after failing with host networking)."""
    beside = Path(sys.executable).with_name("podman-compose")
    binary = str(beside) if beside.exists() else require_binary("podman-compose")
    version = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
    found = re.search(r"podman-compose version (\d+)\.(\d+)", version)
    if found is None or (int(found.group(1)), int(found.group(2))) < (1, 6):
        pytest.skip(f"podman-compose 1.6+ is needed (./dev.sh installs it); found: {version!r}")
    return binary


def host_network_override(
    ports: dict[str, int], prometheus_dir: Path, stand_ins: dict[str, Built]
) -> dict[str, Any]:
    """Every service on the host's network, on the given loopback ports; the second worker a
    service of its own; the workers named (their shard leases say which holds what)."""
    services = COMPOSE["services"]
    redis_port = str(ports["redis"])

    def irtrack(service: str) -> dict[str, str]:
        return {
            "IRTRACK_HOST": "127.0.0.1",
            "IRTRACK_PORT": str(ports[service]),
            "IRTRACK_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        }

    prometheus_command = [
        *(arg for arg in services["prometheus"]["command"] if not arg.startswith("--config.file=")),
        "--config.file=/etc/irtrack-test/prometheus.yml",
        f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
    ]
    override: dict[str, dict[str, Any]] = {
        "redis": {
            "command": [*services["redis"]["command"], "--port", redis_port, "--bind", "127.0.0.1"],
            "healthcheck": {"test": ["CMD", "redis-cli", "-p", redis_port, "ping"]},
        },
        "api": {"environment": irtrack("api")},
        "prometheus": {
            "command": prometheus_command,
            "volumes": [f"{prometheus_dir}:/etc/irtrack-test:ro"],
        },
    }
    for name in WORKERS:
        worker = services["worker"] if name != "worker" else {}
        override[name] = {
            **worker,
            "hostname": name,
            "environment": {**worker.get("environment", {}), **irtrack(name)},
            "deploy": {**worker.get("deploy", {}), "replicas": 1},
        }
    for service, built in stand_ins.items():
        override[service]["image"] = built.image
    for service in override.values():
        service["network_mode"] = "host"
    return {"services": override}


class Stack:
    """docker-compose.yml and the host-network override under podman-compose."""

    def __init__(self, workdir: Path, images: Images) -> None:
        self.ports = {service: free_port() for service in SERVICES}
        self.api_key = secrets.token_hex(16)
        prometheus_dir = workdir / "prometheus"
        prometheus_dir.mkdir()
        targets = {
            "irtrack-api": [f"127.0.0.1:{self.ports['api']}"],
            "irtrack-worker": [f"127.0.0.1:{self.ports[w]}" for w in WORKERS],
        }
        config = prometheus_config(targets, "/etc/prometheus")  # deploy/prometheus, as composed
        (prometheus_dir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.override = workdir / "host-network.yml"
        overrides = host_network_override(self.ports, prometheus_dir, images.stand_ins)
        self.override.write_text(yaml.safe_dump(overrides))
        self.prometheus = PrometheusClient(self.ports["prometheus"])
        self.keys = RedisKeys(Settings.model_fields["redis_prefix"].default, SHARDS)
        self.binary = podman_compose()
        self.up_to_ready_s = 0.0
        self._settling: tuple[dict[int, str], float] | None = None  # holders, since when

    def compose(self, *args: str, timeout_s: float = 300) -> None:
        environment = {
            **podman_environment(),
            "IRTRACK_API_KEYS": self.api_key,
            "IRTRACK_MODELS": "sd2net",  # one model: the workers start in seconds
        }
        files = ["-f", str(COMPOSE_FILE), "-f", str(self.override)]
        result = subprocess.run(
            [self.binary, "-p", PROJECT, *files, *args],
            cwd=REPO,
            env=environment,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
        assert result.returncode == 0, (
            f"podman-compose {args}:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"
        )

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def container(self, service: str) -> str:
        names = podman(
            "ps",
            "--all",
            "--format",
            "{{.Names}}",
            "--filter",
            f"label=com.docker.compose.project={PROJECT}",
            "--filter",
            f"label=com.docker.compose.service={service}",
        ).stdout.split()
        assert len(names) == 1, (service, names)
        return names[0]

    def inspect(self, service: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(podman("inspect", self.container(service)).stdout)[0]
        return state

    def answers(self, service: str, path: str = "/readyz") -> bool:
        try:
            return httpx.get(f"{self.url(service)}{path}", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ready(self) -> bool:
        return all(self.answers(s) for s in ("api", *WORKERS)) and self.answers(
            "prometheus", "/-/ready"
        )

    def lease_holders(self) -> dict[int, str]:
        """shard -> id of the worker holding its lease (host name:pid:random part)."""
        with redis.Redis(port=self.ports["redis"]) as client:
            holders = [client.get(self.keys.lease(shard)) for shard in range(SHARDS)]
        return {s: h.decode() for s, h in enumerate(holders) if h is not None}

    def shard_holders(self) -> dict[int, str]:
        """shard -> host name of the worker holding its lease."""
        return {s: holder.split(":")[0] for s, holder in self.lease_holders().items()}

    def settled(self) -> bool:
        """Every shard held, evenly, by the live workers (registered and connected to Redis, as
        the workers themselves judge it: a worker restarted under the same host name leaves its
        dead incarnation's leases behind until they expire), each worker's registration listing
        the shards it holds; and the same holders for SETTLED_S (several lease renewals)."""
        holders = self.lease_holders()
        live = {r["id"]: set(r["shards"]) for r in asyncio.run(self._live_workers())}
        counts = [sum(h.split(":")[0] == worker for h in holders.values()) for worker in WORKERS]
        even = (
            len(holders) == SHARDS
            and max(counts) - min(counts) <= 1
            and all(
                live.get(holder) is not None and shard in live[holder]
                for shard, holder in holders.items()
            )
        )
        now = time.monotonic()
        if not even or self._settling is None or self._settling[0] != holders:
            self._settling = (holders, now) if even else None
            return False
        return now - self._settling[1] >= SETTLED_S

    async def _live_workers(self) -> list[dict[str, Any]]:
        client = redis.asyncio.Redis(port=self.ports["redis"])
        try:
            return await live_workers(client, self.keys)
        finally:
            await client.aclose()

    def lease_events(self) -> str:
        """What a mismatch needs to be explained: the workers' restarts and their log lines about
        shards, leases and Redis (a shard that moved restarts its streams cold)."""
        lines = []
        for worker in WORKERS:
            restarts = self.inspect(worker)["RestartCount"]
            logs = podman("logs", self.container(worker), check=False)
            events = [
                line
                for line in (logs.stdout + logs.stderr).splitlines()
                if re.search(r"shard|lease|dead|Redis|stopping|Traceback", line)
            ]
            lines += [f"--- {worker}: {restarts} restarts ---", *events[-40:]]
        return "\n".join(lines)

    def logs(self) -> str:
        return "\n".join(
            f"--- {service} ---\n{logs.stdout}{logs.stderr}"
            for service in SERVICES
            for logs in [podman("logs", "--tail", "30", self.container(service), check=False)]
        )


@pytest.fixture(scope="module")
def stack(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = Stack(tmp_path_factory.mktemp("stack"), images)
    running.compose("down", "--volumes")  # what an interrupted run may have left
    started = time.monotonic()
    try:
        running.compose("up", "--detach", *SERVICES)
        wait_for(running.ready, 300, "the API, both workers and Prometheus to be ready", 0.2)
        running.up_to_ready_s = time.monotonic() - started
        yield running
    except BaseException:
        print(running.logs())
        raise
    finally:
        running.compose("down", "--volumes")


# --- figures -------------------------------------------------------------------------------------
def record(capsys: pytest.CaptureFixture[str], line: str) -> None:
    """Print a line of figures past pytest's capture, and keep it for the report."""
    REPORT.append(line)
    with capsys.disabled():
        print(f"\n{line}")


@pytest.fixture(scope="module", autouse=True)
def report(request: pytest.FixtureRequest) -> Iterator[None]:
    """Time the whole module (builds to the stack's removal) and print it; write every figure to
    $IRTRACK_CONTAINERS_REPORT (markdown) when it is set."""
    REPORT.clear()
    started = time.monotonic()
    yield
    if not REPORT:
        return  # skipped
    REPORT.append(f"[time] {time.monotonic() - started:.0f} s for the container test in all")
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\n{REPORT[-1]}")
    destination = os.environ.get("IRTRACK_CONTAINERS_REPORT")
    if not destination:
        return
    machine = machine_info(torch.device("cpu"))
    podman_version = podman("--version").stdout.strip()
    compose_version = subprocess.run(
        [podman_compose(), "--version"], capture_output=True, text=True
    ).stdout.splitlines()[0]
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    changes = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
    source = f"commit {commit.stdout.strip()}" + (" with local changes" if changes.stdout else "")
    Path(destination).write_text(
        f"Measured {machine['date']} on {machine['cpu']} (load average "
        f"{machine['load_average_1min']} at the end), {podman_version}, {compose_version}, "
        f"{source}, by tests/test_containers.py:\n\n```\n" + "\n".join(REPORT) + "\n```\n"
    )


# --- frames --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    """The first frames of the demo's real thermal clip, as the camera made them (640x512)."""
    clip = require_path(VIDEO_DIR / DEMO_CLIP, "the demo's thermal clip")
    return list(islice(open_source(str(clip)), FRAMES_CHECKED))


def drill_stream(stream_id: str, stack: Stack, frames: list[np.ndarray]) -> StreamRun:
    """A stream of the clip's frames reduced to DRILL_SIZE, round and round."""
    small = [cv2.resize(frame, DRILL_SIZE, interpolation=cv2.INTER_AREA) for frame in frames]
    return StreamRun(
        stream_id,
        stack.url("api"),
        lambda seq: small[seq % len(small)],
        headers={"X-API-Key": stack.api_key},
    )


def stream_ids_on_each_worker(stack: Stack, per_worker: int, prefix: str) -> dict[str, list[str]]:
    """New stream ids, ``per_worker`` on the shards of each worker, once they share them evenly."""
    wait_for(stack.settled, 120, "the live workers to share the shards evenly, settled", 0.2)
    return stream_ids_per_owner(stack.shard_holders(), list(WORKERS), per_worker, prefix, SHARDS)


def drill_streams(
    stack: Stack, frames: list[np.ndarray], prefix: str
) -> dict[str, list[StreamRun]]:
    """Eight streams, four on the shards of each worker (worker -> its streams)."""
    by_worker = stream_ids_on_each_worker(stack, 4, prefix)
    return {
        worker: [drill_stream(sid, stack, frames) for sid in ids]
        for worker, ids in by_worker.items()
    }


def lost(runs: list[StreamRun]) -> int:
    """Frames answered with a drop or an error instead of a result."""
    return sum(len(run.exchanges) - len(run.of_type("result")) for run in runs)


# --- tests ---------------------------------------------------------------------------------------
def test_images_run_unprivileged_with_health_checks_and_the_api_image_has_no_torch(
    images: Images, capsys: pytest.CaptureFixture[str]
) -> None:
    for built in (images.api, images.worker):
        (config,) = json.loads(podman("image", "inspect", built.image).stdout)
        assert config["Config"]["User"] == "irtrack", built.image
        assert "/healthz" in " ".join(config["Healthcheck"]["Test"]), built.image
    no_torch = podman("run", "--rm", images.api.image, "python", "-c", "import torch", check=False)
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr
    assert images.api.size_bytes < images.worker.size_bytes / 2
    base = (
        "present already"
        if images.base_seconds is None
        else f"made in {images.base_seconds:.1f} s (debootstrap + podman import)"
    )
    cuda = (
        images.cuda_worker.figures()
        if images.cuda_worker is not None
        else f"not built: no {cuda_base()} here"
    )
    stand_ins = "; ".join(f"{s} {b.figures()}" for s, b in images.stand_ins.items())
    record(
        capsys,
        f"[images] api {images.api.figures()}; CPU worker {images.worker.figures()}; "
        f"CUDA worker {cuda}; Debian base {base}; stand-ins: {stand_ins or 'none needed'}",
    )


def test_the_stack_answers_real_frames_as_the_library_does(
    stack: Stack, clip_frames: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    """One stream on each worker, the clip's first frames at 640x512, against the same frames
    through an embedded service in this process: the same targets, tracks and masks."""
    record(
        capsys, f"[up] {stack.up_to_ready_s:.1f} s from `podman-compose up` to every service ready"
    )
    by_worker = stream_ids_on_each_worker(stack, 1, "clip")
    runs = [
        StreamRun(ids[0], stack.url("api"), clip_frames.__getitem__, {"X-API-Key": stack.api_key})
        for ids in by_worker.values()
    ]
    started = time.monotonic()

    async def both_streams() -> None:
        await asyncio.gather(*(websocket_stream(run, count=len(clip_frames)) for run in runs))

    asyncio.run(both_streams())
    seconds = time.monotonic() - started
    with running_server(models=["sd2net"], warmup_sizes=["640x512"]) as server:
        reference = StreamRun("reference", server.base_url, clip_frames.__getitem__)
        asyncio.run(websocket_stream(reference, count=len(clip_frames)))

    assert_one_answer_per_frame_in_order([*runs, reference])
    expected = [e.answer for e in reference.exchanges]
    assert all(a["type"] == "result" for a in expected)
    assert sum(len(a["targets"]) for a in expected) >= len(expected) // 2, "a clip with no target"
    for run in runs:
        # A stream restarts cold (its tracker confirms later than the library's) only when its
        # shard moves, which a settled stack has no reason to do: CI saw one restart at seq 1
        # before the wait above asked for live holders; say why if it happens again.
        restarted = [e.seq for e in run.exchanges if e.answer.get("reset")]
        assert not restarted, (run.stream_id, restarted, stack.lease_events())
        for exchange, wanted in zip(run.exchanges, expected, strict=True):
            answer = exchange.answer
            assert answer["type"] == "result", answer
            assert (answer["width"], answer["height"], answer["model"]) == (640, 512, "sd2net")
            assert answer["targets"] == wanted["targets"], (run.stream_id, exchange.seq)
            assert np.array_equal(decode_rle(answer["mask"]), decode_rle(wanted["mask"]))
    totals = assert_frames_accounted(stack.url("api"))
    assert totals["processed"] >= 2 * len(clip_frames)
    for service in ("api", *WORKERS):
        check = podman("healthcheck", "run", stack.container(service), check=False)
        assert check.returncode == 0, (service, check.stdout, check.stderr)
    record(
        capsys,
        figures_line(
            "real frames, 640x512, one stream per worker",
            runs,
            seconds=seconds,
            frames_per_second=len(clip_frames) * len(runs) / seconds,
        )
        + "; answers equal to the library's (targets, track ids, masks)",
    )


def test_prometheus_scrapes_every_target_and_loads_the_alerts(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    prometheus = stack.prometheus
    wait_for(
        lambda: prometheus.scalar('count(up{job=~"irtrack-.*"} == 1)') == 1 + len(WORKERS),
        30,
        "Prometheus to scrape the API and both workers",
        0.5,
    )
    received = assert_frames_accounted(stack.url("api"))["received"]
    wait_for(
        lambda: (
            prometheus.scalar('sum(irtrack_frames_received_total{job="irtrack-api"})') == received
        ),
        10,
        "Prometheus to hold the API's frame count",
        0.5,
    )
    groups = httpx.get(f"{prometheus.api}/rules").json()["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert {rule["name"] for rule in rules} >= {"IrtrackWorkerDown", "IrtrackNoFrames"}
    assert all(rule["health"] == "ok" for rule in rules), rules
    record(
        capsys,
        f"[prometheus] targets up: api + {len(WORKERS)} workers; {len(rules)} alert rules loaded "
        f"from deploy/prometheus; frames received as scraped: {received:.0f}",
    )


def test_a_killed_worker_container_its_streams_move_and_it_comes_back(
    stack: Stack, clip_frames: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    """worker-2's process killed with SIGKILL from outside (as the OOM killer would): its streams
    restart cold on the other worker, sooner than a lease TTL (its closed connections tell that it
    died), none lost; its restart policy brings it back."""
    streams = drill_streams(stack, clip_frames, "kill")
    runs = [run for group in streams.values() for run in group]
    victim = "worker-2"
    restarts = stack.inspect(victim)["RestartCount"]

    def kill_victim() -> None:
        os.kill(stack.inspect(victim)["State"]["Pid"], 9)

    struck = asyncio.run(
        run_with_fault(runs, 3 + LEASE_TTL_S, kill_victim, DRILL_PERIOD_S, strike_after_s=3)
    )

    assert_one_answer_per_frame_in_order(runs)
    for run in runs:
        assert not run.of_type("error"), [e.answer["error"] for e in run.of_type("error")]
        assert [e.answer["type"] for e in run.exchanges[-3:]] == ["result"] * 3, run.stream_id
        resets = [e for e in run.of_type("result") if e.answer["reset"]]
        assert all(e.answered_at > struck for e in resets), run.stream_id
        if run in streams[victim]:
            assert resets, f"{run.stream_id} did not restart cold on the other worker"
    recovery = max(run.first_result_after(struck) for run in streams[victim]) - struck
    assert recovery < LEASE_TTL_S, recovery
    wait_for(lambda: stack.answers(victim), 180, f"{victim} to be restarted and ready", 0.2)
    back = time.monotonic() - struck
    assert stack.inspect(victim)["RestartCount"] == restarts + 1
    assert_frames_accounted(stack.url("api"))
    record(
        capsys,
        figures_line(
            "worker container killed (SIGKILL)",
            runs,
            lost=lost(runs),
            recovery_seconds=recovery,
            lease_ttl_seconds=LEASE_TTL_S,
            restarted_and_ready_seconds=back,
        ),
    )


def test_redis_restarted_mid_stream_the_stack_recovers_by_itself(
    stack: Stack, clip_frames: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    """``podman restart`` of the Redis container: the API holds every frame until it is answered,
    so none is lost (those inside Redis are sent again); no other container restarts."""
    runs = [run for group in drill_streams(stack, clip_frames, "restart").values() for run in group]
    others = ("api", *WORKERS)
    restarts = {service: stack.inspect(service)["RestartCount"] for service in others}
    outage: list[float] = []

    def restart_redis() -> None:
        began = time.monotonic()
        podman("restart", stack.container("redis"))
        outage.append(time.monotonic() - began)

    struck = asyncio.run(run_with_fault(runs, 15, restart_redis, DRILL_PERIOD_S, strike_after_s=3))

    assert_one_answer_per_frame_in_order(runs)
    for run in runs:
        assert not run.of_type("error"), [e.answer["error"] for e in run.of_type("error")]
        assert not run.of_type("dropped")
        assert [e.answer["type"] for e in run.exchanges[-3:]] == ["result"] * 3, run.stream_id
    recovery = max(run.first_result_after(struck) for run in runs) - struck
    assert recovery < 10, recovery
    assert {service: stack.inspect(service)["RestartCount"] for service in others} == restarts
    wait_for(stack.ready, 30, "every service to be ready again", 0.2)
    assert_frames_accounted(stack.url("api"))
    record(
        capsys,
        figures_line(
            "Redis container restarted",
            runs,
            lost=lost(runs),
            restart_seconds=outage[0],
            recovery_seconds=recovery,
        ),
    )
