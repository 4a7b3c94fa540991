"""The Dockerfile and docker-compose.yml cannot be built or run here (no container runtime): what can be
checked is, that the compose file parses and its commands, ports and environment agree with the
Dockerfile, the Prometheus config, the Grafana provisioning and the README."""

from __future__ import annotations

import re

import yaml

from tests.service_process import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()


def instruction(name: str) -> str:
    (found,) = re.findall(rf"^{name} (.+)$", DOCKERFILE, re.MULTILINE)
    return found


def test_the_image_runs_the_console_script_as_a_non_root_user_and_checks_livez() -> None:
    """CMD is setup.py's console script, USER is not root, HEALTHCHECK asks /livez on $PORT, and the
    package is installed from the repository at the locked versions, as `make install` does."""
    assert instruction("CMD") == '["tornado-rate-limiter"]'
    assert "tornado-rate-limiter = tornado_rate_limiter.app.cli:main" in (ROOT / "setup.py").read_text()
    assert instruction("USER") not in ("root", "0")
    assert "/livez" in DOCKERFILE.split("HEALTHCHECK", 1)[1]
    assert "pip install --no-cache-dir -c /src/constraints.txt /src" in DOCKERFILE
    assert instruction("FROM").startswith("python:3.11-slim")
    assert (ROOT / ".python-version").read_text().strip() == "3.11"


def test_compose_serves_the_limiter_on_its_port_with_redis() -> None:
    """The limiter publishes the port it listens on (PORT, EXPOSE) and finds the compose Redis."""
    limiter = COMPOSE["services"]["limiter"]
    port = limiter["environment"]["PORT"]
    assert limiter["ports"] == [f"{port}:{port}"] and instruction("EXPOSE") == port
    assert limiter["environment"]["REDIS_URL"] == "redis://redis:6379/0" and "redis" in COMPOSE["services"]


def test_compose_prometheus_scrapes_the_limiter_as_the_job_the_alerts_select() -> None:
    """Prometheus mounts deploy/prometheus and scrapes limiter:PORT as job rate-limiter."""
    prometheus = COMPOSE["services"]["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    port = COMPOSE["services"]["limiter"]["environment"]["PORT"]
    assert job["job_name"] == "rate-limiter" and job["static_configs"] == [{"targets": [f"limiter:{port}"]}]
    assert config["rule_files"] == ["rules.yml"]


def test_compose_grafana_mounts_the_dashboards_where_the_provisioning_looks() -> None:
    """The dashboards folder is mounted at the path the provisioning file names."""
    volumes = COMPOSE["services"]["grafana"]["volumes"]
    provisioning = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "dashboards" / "rate-limiter.yml").read_text()
    )
    (provider,) = provisioning["providers"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in volumes


def test_the_readme_names_the_stacks_ports_and_command() -> None:
    """The README's local-stack paragraph says what compose publishes."""
    assert "docker compose up" in README
    for service, port in (("limiter", 8080), ("prometheus", 9090), ("grafana", 3000)):
        assert f"{port}:{port}" in COMPOSE["services"][service]["ports"]
        assert f"localhost:{port}" in README
