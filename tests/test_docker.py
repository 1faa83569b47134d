"""What can be checked without a Docker engine: the compose file, its settings, the Dockerfiles."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from server.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())


def _seconds(value: str) -> int:
    match = re.fullmatch(r"(\d+)s", value)
    assert match, value
    return int(match.group(1))


def test_compose_services_and_scaling() -> None:
    services = COMPOSE["services"]
    assert set(services) == {"server", "lb", "redis"}
    server = services["server"]
    assert "ports" not in server, "replicas publish no host port, so --scale works; nginx does"
    assert services["lb"]["ports"] and "server" in (ROOT / "docker" / "nginx.conf").read_text()
    gpu = server["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
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
    example = {line.split("=")[0] for line in (ROOT / "docker" / ".env.example").read_text().splitlines()
               if line and not line.startswith("#")}
    assert used <= example, used - example


def test_dockerfiles_install_as_the_readme_does() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -e '.[dev]' -e clients" in makefile  # the README's install
    for name in ("Dockerfile", "Dockerfile.cpu"):
        text = (ROOT / "docker" / name).read_text()
        assert "pip install . ./clients" in text, name  # the same packages, not editable, no dev tools
        assert re.search(r"^USER (?!root)\w+", text, re.M), name
        assert "HEALTHCHECK" in text and "/health/ready" in text and "EXPOSE 8000" in text
        for package in ("models", "engine", "server", "clients"):
            assert f"COPY {package} {package}" in text
        assert 'CMD ["t4v", "serve"]' in text
    assert "python3.11" in (ROOT / "docker" / "Dockerfile").read_text()  # requires-python >= 3.11
