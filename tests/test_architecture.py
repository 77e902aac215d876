"""The layout: packages stacked by what they import, no import running upward, no cycles, a
purpose for every package, and the torch-free parts staying torch-free."""

import ast
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lowest first: a module may import its own layer and the layers below it, never one above.
LAYERS = [
    ("frames",),
    ("models",),
    ("data",),
    ("evaluation",),
    ("training",),
    (
        "service",
        "service.settings",
        "service.errors",
        "service.schemas",
        "service.metrics",
        "service.codecs",
    ),
    ("service.transport",),
    ("service.api", "service.worker"),
    ("service.routes",),
    ("service.app", "service.server", "service.worker_process"),
    ("clients",),
    ("bench",),
    ("cli",),
]
PACKAGES = (
    "frames",
    "models",
    "data",
    "evaluation",
    "training",
    "service",
    "clients",
    "bench",
    "cli",
)
TORCH_FREE = ("frames", "clients", "service.api", "service.transport", "service.routes")


def layer_of(module: str) -> tuple[int, str]:
    """(layer index, the layer entry that claims ``module``): the longest matching prefix wins."""
    best: tuple[int, str] | None = None
    for index, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and (
                best is None or len(name) > len(best[1])
            ):
                best = (index, name)
    assert best is not None, f"{module} belongs to no layer"
    return best


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def imports_of(path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) of every import in the file, top-level or inside a function."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno
            for alias in node.names:
                yield f"{node.module}.{alias.name}", node.lineno


def project_imports() -> dict[str, set[str]]:
    modules = project_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for imported, _ in imports_of(path):
            if imported in modules and imported != name:
                graph[name].add(imported)
    return graph


def test_no_import_runs_upward() -> None:
    violations = []
    for module, imported_modules in project_imports().items():
        own_layer, _ = layer_of(module)
        for imported in imported_modules:
            layer, _ = layer_of(imported)
            if layer > own_layer:
                violations.append(f"{module} -> {imported}")
    assert not violations, "imports running upward:\n" + "\n".join(sorted(violations))


def test_the_service_api_side_and_workers_never_import_each_other() -> None:
    graph = project_imports()
    crossing = [
        f"{module} -> {imported}"
        for module, imported_modules in graph.items()
        for imported in imported_modules
        for a, b in (("service.api", "service.worker"), ("service.worker", "service.api"))
        if module.startswith(a) and imported.startswith(b)
    ]
    assert not crossing, crossing


def test_the_modules_import_no_cycle() -> None:
    graph = project_imports()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                cycle = [*path[path.index(imported) :], imported]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_every_package_says_what_it_is_for() -> None:
    missing = [
        str(init.relative_to(REPO))
        for package in PACKAGES
        for init in [REPO / package / "__init__.py", *(REPO / package).rglob("*/__init__.py")]
        if init.exists() and not ast.get_docstring(ast.parse(init.read_text()))
    ]
    packages_without_init = [
        str(folder.relative_to(REPO))
        for package in PACKAGES
        for folder in [REPO / package, *(REPO / package).rglob("*")]
        if folder.is_dir() and any(folder.glob("*.py")) and not (folder / "__init__.py").exists()
    ]
    assert not missing and not packages_without_init, (missing, packages_without_init)


def test_the_torch_free_packages_import_no_torch_at_all() -> None:
    heavy = ("torch", "onnxruntime", "onnx", "safetensors")
    offenders = [
        f"{module}: {imported} (line {line})"
        for module, path in project_modules().items()
        if layer_of(module)[1].startswith(TORCH_FREE)
        for imported, line in imports_of(path)
        if imported.split(".")[0] in heavy
    ]
    assert not offenders, offenders


LOADED_HEAVY = (
    "import sys\n"
    "heavy = sorted(m for m in ('torch', 'onnxruntime') if m in sys.modules)\n"
    "print(','.join(heavy) or 'none')\n"
)


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_a_scale_out_api_process_never_imports_torch() -> None:
    code = (
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        "app = create_app(Settings(redis_url='redis://127.0.0.1:1/0'))\n"
        "assert app.state.engine is not None\n" + LOADED_HEAVY
    )
    assert run_python(code) == "none"


def test_the_client_sdk_and_the_stream_command_never_import_torch() -> None:
    code = (
        "import clients, clients.stream_cli\n"
        "from cli.app import build_app\n"
        "build_app(['stream', '--help'])\n"
        "build_app(['serve'])\n" + LOADED_HEAVY
    )
    assert run_python(code) == "none"


def test_the_embedded_mode_does_load_the_models_runtime() -> None:
    """The counter-check: the test above would pass vacuously if nothing ever loaded torch."""
    code = (
        "from service.app import create_app\n"
        "from service.settings import Settings\n"
        "create_app(Settings(models=['sd2net'], default_model='sd2net'))\n" + LOADED_HEAVY
    )
    assert "torch" in run_python(code)


def test_the_client_and_api_installs_leave_torch_out() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {
            re.split(r"[\[<>=~! ;]", requirement, maxsplit=1)[0] for requirement in requirements
        }

    heavy = {"torch", "onnx", "onnxruntime", "safetensors"}
    assert not heavy & names(project["dependencies"])  # pip install irtrack: the client SDK
    assert not heavy & names(extras["api"])  # pip install irtrack[api]: a scale-out API process
    assert "torch==2.13.0" in extras["worker"] and "irtrack[api]" in extras["worker"]
