"""What can be checked without a Docker engine: the compose file, its settings, the Dockerfiles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from text4vis.server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
NGINX = (ROOT / "docker" / "nginx.conf.template").read_text()


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))


def test_compose_services_and_scaling() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"engine", "server", "lb", "redis"}
    server = services["server"]
    assert "ports" not in server, "replicas publish no host port, so --scale works; nginx does"
    assert services["lb"]["ports"] and "server" in NGINX
    gpu = server["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu", "video"]  # video: NVDEC
    assert "health/ready" in " ".join(server["healthcheck"]["test"])


def test_every_setting_passed_exists_and_shutdown_fits_the_grace_period() -> None:
    env = COMPOSE["services"]["server"]["environment"]
    known = {f"T4V_{name.upper()}" for name in Settings.model_fields}
    passed = {k for k in env if k.startswith("T4V_")}
    assert passed <= known, passed - known
    assert _seconds(COMPOSE["services"]["server"]["stop_grace_period"]) > int(env["T4V_SHUTDOWN_TIMEOUT_S"])
    literal = {k[4:].lower(): v for k, v in env.items() if k.startswith("T4V_") and "${" not in str(v)}
    literal.pop("redis_url", None)
    Settings(**{k: (yaml.safe_load(v) if k == "presets" else v) for k, v in literal.items()})  # they validate


def test_redis_is_private_persistent_and_password_protected() -> None:
    redis = COMPOSE["services"]["redis"]
    assert "ports" not in redis
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command and "--requirepass" in command
    assert any(v.endswith(":/data") for v in redis["volumes"])
    assert "${REDIS_PASSWORD" in COMPOSE["services"]["server"]["environment"]["T4V_REDIS_URL"]


def test_env_example_covers_the_compose_variables() -> None:
    text = (ROOT / "docker" / "compose.yaml").read_text()
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    example = {
        line.split("=")[0]
        for line in (ROOT / "docker" / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert used <= example, used - example


def test_dockerfiles_install_as_the_readme_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -e '.[dev,distributed]' -e clients" in makefile  # the README's install
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (ROOT / "docker" / name).read_text()
        assert "pip install . ./clients" in text, name  # the same packages, not editable, no dev tools
        assert re.search(r"^USER (?!root)\w+", text, re.M), name
        assert "HEALTHCHECK" in text and "/health/ready" in text and "EXPOSE 8000" in text
        for package in ("models", "engine", "server", "clients"):
            assert f"COPY {package} {package}" in text
        assert 'CMD ["t4v", "serve"]' in text
        assert re.search(r"^FROM python:3\.11-", text, re.M), name  # requires-python >= 3.11; CI tests 3.11


# What the images install, and the CUDA major version each GPU wheel is built for.
DOCKERFILES = {name: (ROOT / "docker" / name).read_text() for name in ("Dockerfile", "Dockerfile.cpu")}
COMPOSE_V2_TOP_LEVEL = {"name", "services", "networks", "volumes", "configs", "secrets", "include"}


def _pins(text: str) -> list[tuple[str, str]]:
    """``name==version`` on the Dockerfile's pip lines."""
    pip_lines = " ".join(line for line in text.replace("\\\n", " ").splitlines() if "pip install" in line)
    return re.findall(r"([A-Za-z0-9_.\-]+)==([0-9][A-Za-z0-9_.+\-]*)", pip_lines)


def _cuda_major() -> int:
    match = re.search(r"^ARG CUDA_MAJOR=(\d+)$", DOCKERFILES["Dockerfile"], re.M)
    assert match, "docker/Dockerfile declares the image's CUDA major version (ARG CUDA_MAJOR)"
    return int(match.group(1))


def test_compose_is_v2_and_serves_the_engine_it_exports() -> None:
    assert set(COMPOSE) - {k for k in COMPOSE if k.startswith("x-")} <= COMPOSE_V2_TOP_LEVEL
    assert "Compose v2" in (ROOT / "docker" / "compose.yaml").read_text().splitlines()[0]
    engine, server = COMPOSE["services"]["engine"], COMPOSE["services"]["server"]
    command = engine["command"]
    assert command[:2] == ["t4v", "export"] and engine["restart"] == "no"
    out = command[command.index("--out") + 1]
    assert server["environment"]["T4V_ENGINE_DIR"] == out and out.startswith("/engines/")
    assert command[command.index("--format") + 1] == "${T4V_ENGINE_FORMAT:-tensorrt}"
    assert command[command.index("--max-batch") + 1] == server["environment"]["T4V_MAX_BATCH_FRAMES"]
    assert server["depends_on"]["engine"]["condition"] == "service_completed_successfully"
    for service in (engine, server):
        assert "engines:/engines" in service["volumes"] and service["deploy"]["resources"]["reservations"]
    assert "/engines" in DOCKERFILES["Dockerfile"].split("USER")[0]  # created for the non-root user


def test_nginx_promises_no_retry_of_uploads() -> None:
    assert "proxy_request_buffering off" in NGINX and "non_idempotent" not in NGINX
    assert "is NOT retried" in NGINX or "Nothing with a body" in NGINX


def test_replicas_share_one_kept_archive_and_streams_are_not_buffered() -> None:
    """The archive on a named volume every replica mounts (kept when containers are recreated);
    nginx streams NDJSON unbuffered; its upload limit is the server's setting; the build context
    leaves the virtual environment and data out."""
    server, lb = COMPOSE["services"]["server"], COMPOSE["services"]["lb"]
    uri = server["environment"]["T4V_ARCHIVE_URI"]
    assert any(v == f"archive:{uri}" for v in server["volumes"]) and "archive" in COMPOSE["volumes"]
    assert f"{uri} " in DOCKERFILES["Dockerfile"].split("USER")[0] + " "  # writable by the non-root user
    streamed = re.search(r"location ~ \^/\((.+?)\)\$ \{(.+?)\}", NGINX, re.S)
    assert streamed and set(streamed.group(1).split("|")) == {"classify/timeline", "archive/labels"}
    assert "proxy_buffering off" in streamed.group(2)
    assert "client_max_body_size ${T4V_MAX_UPLOAD_BYTES};" in NGINX
    assert lb["environment"]["T4V_MAX_UPLOAD_BYTES"] == server["environment"]["T4V_MAX_UPLOAD_BYTES"]
    assert any(v.endswith(":/etc/nginx/templates/default.conf.template:ro") for v in lb["volumes"])
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", "data", ".git"} <= set(ignored)


def test_one_cuda_major_version_in_the_gpu_image() -> None:
    """The base image brings no CUDA (or the same major), TensorRT's distribution names it, and the
    installed torch (the pyproject pin the image installs) requires that CUDA."""
    from importlib import metadata

    major = _cuda_major()
    text = DOCKERFILES["Dockerfile"]
    base = re.search(r"^FROM (\S+)", text, re.M)
    assert base
    cuda_base = re.match(r"nvidia/cuda:(\d+)\.", base.group(1))
    assert cuda_base is None or int(cuda_base.group(1)) == major, base.group(1)
    pins = dict(_pins(text))
    trt = [name for name in pins if name.startswith("tensorrt")]
    assert trt and all(name == f"tensorrt-cu{major}" for name in trt), trt
    assert "onnxruntime-gpu" in pins and not any(name.endswith("cu12") for name in pins)
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_pin = re.search(r'"torch==([^"]+)"', pyproject)
    assert torch_pin and metadata.version("torch") == torch_pin.group(1)
    requires = " ".join(metadata.requires("torch") or [])
    toolkit = re.search(r"cuda-toolkit\S*==(\d+)\.", requires)
    assert toolkit and int(toolkit.group(1)) == major, requires


def _index_files(name: str) -> list[dict[str, object]]:
    import json
    import urllib.request

    request = urllib.request.Request(
        f"https://pypi.org/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["files"]


def _version_files(name: str, version: str) -> list[dict[str, object]]:
    stem = name.replace("-", "_").lower()
    return [
        f
        for f in _index_files(name)
        if str(f["filename"]).lower().startswith(f"{stem}-{version}-")
        or str(f["filename"]).lower() == f"{stem}-{version}.tar.gz"
    ]


class _HttpRange:
    """A read-only file over HTTP range requests: zipfile reads a wheel's METADATA without the
    whole wheel (torch's is about a gigabyte)."""

    def __init__(self, url: str, size: int) -> None:
        self.url, self.size, self.pos = url, size, 0

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def read(self, n: int = -1) -> bytes:
        import urllib.request

        end = self.size if n < 0 else min(self.size, self.pos + n)
        if end <= self.pos:
            return b""
        request = urllib.request.Request(self.url, headers={"Range": f"bytes={self.pos}-{end - 1}"})
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
        self.pos += len(data)
        return data


def _wheel_requires(name: str, version: str) -> str:
    """``Requires-Dist`` of the Linux x86_64 CPython 3.11 wheel of ``name==version``."""
    import zipfile

    wheels = [
        f
        for f in _version_files(name, version)
        if "cp311" in str(f["filename"]) and "manylinux" in str(f["filename"]) and "x86_64" in str(f["filename"])
    ]
    assert len(wheels) == 1, f"{name}=={version} has no single CPython 3.11 Linux x86_64 wheel on PyPI"
    (wheel,) = wheels
    with zipfile.ZipFile(_HttpRange(str(wheel["url"]), int(wheel["size"]))) as archive:  # type: ignore[arg-type]
        (meta,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return "\n".join(line for line in archive.read(meta).decode().splitlines() if line.startswith("Requires"))


@pytest.mark.network
def test_every_dockerfile_pin_exists_on_the_package_index() -> None:
    """Every ``name==version`` a Dockerfile installs is on PyPI. (Dockerfile.cpu takes torch from
    torch's CPU index, which this machine cannot reach; the same version is checked on PyPI.)"""
    missing = [
        f"{name}=={version} ({dockerfile})"
        for dockerfile, text in DOCKERFILES.items()
        for name, version in _pins(text)
        if not _version_files(name, version)
    ]
    assert not missing, f"not on PyPI: {missing}"


@pytest.mark.network
def test_gpu_wheels_are_built_for_the_image_cuda() -> None:
    major = _cuda_major()
    pins = dict(_pins(DOCKERFILES["Dockerfile"]))
    ort = _wheel_requires("onnxruntime-gpu", pins["onnxruntime-gpu"])
    assert re.search(rf"nvidia-cuda-runtime~={major}\.", ort) and f"cudnn-cu{major}" in ort, ort
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch_version = re.search(r'"torch==([^"]+)"', pyproject)
    assert torch_version
    torch_requires = _wheel_requires("torch", torch_version.group(1))
    assert re.search(rf"cuda-toolkit\S*=={major}\.", torch_requires), torch_requires
