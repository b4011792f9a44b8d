"""The deployment files in `deploy/` agree with the code: every `recur ...` command in them
parses with the real CLI, every service a command names has its Deployment and Service, ports
and probes line up, and every RECUR_* variable is a setting."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

from recur.cli import app as cli_app
from recur.settings import SERVICE_NAMES, Settings

# Typer carries its own copy of click: its usage error is the base of typer.BadParameter.
UsageError: type[Exception] = typer.BadParameter.__mro__[1]
assert UsageError.__name__ == "UsageError"

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
COMPOSE = DEPLOY / "docker-compose.yml"
KUBERNETES = DEPLOY / "kubernetes"

# Commands the deployment files use that the CLI does not have yet, with the options they
# are given, as issue 4 specifies them. Each is checked against this spec instead of the CLI;
# once the command exists, its entry must go (the test below fails until it does), and the
# real CLI checks it from then on.
PENDING_COMMANDS: dict[str, dict[str, type]] = {}


def _documents(path: Path) -> list[dict[str, Any]]:
    with path.open() as file:
        return [doc for doc in yaml.safe_load_all(file) if doc is not None]


def _kubernetes() -> list[dict[str, Any]]:
    return [doc for path in sorted(KUBERNETES.glob("*.yaml")) for doc in _documents(path)]


def _compose() -> dict[str, Any]:
    [compose] = _documents(COMPOSE)
    return compose


def _recur_commands(argv: list[str]) -> Iterator[list[str]]:
    """The `recur ...` command lines in a container's command: itself, or inside `sh -c`."""
    if argv[:1] == ["recur"]:
        yield argv
    elif argv[:2] == ["sh", "-c"]:
        for part in re.split(r"[;&|]|\bdo\b|\bthen\b", argv[2]):
            words = shlex.split(part)
            if words[:1] == ["recur"]:
                yield words


def _containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) of every Deployment, Job and CronJob."""
    for doc in docs:
        spec = doc.get("spec", {})
        if doc.get("kind") == "CronJob":
            spec = spec["jobTemplate"]["spec"]
        pod = spec.get("template", {}).get("spec", {})
        for container in pod.get("containers", []):
            yield doc, container


def _compose_command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    return command if isinstance(command, list) else shlex.split(command)


def _all_commands() -> list[list[str]]:
    commands = [
        line
        for service in _compose()["services"].values()
        for line in _recur_commands(_compose_command(service))
    ]
    commands += [
        line
        for _, container in _containers(_kubernetes())
        for line in _recur_commands(container["command"])
    ]
    return commands


def _option(argv: list[str], name: str) -> list[str]:
    return [argv[i + 1] for i, word in enumerate(argv[:-1]) if word == name]


def _parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    """Parse a `recur ...` line with the real CLI, without running it: its command's path and
    its parameters. Raises click's usage errors for an unknown command or option, a missing
    required one, or a value of the wrong type."""
    assert argv[0] == "recur"
    command: Any = typer.main.get_command(cli_app)
    ctx = typer.Context(command, info_name="recur")
    args, path = argv[1:], []
    while hasattr(command, "list_commands"):  # a group: `recur`, `recur keys`, `recur bench`
        name, *args = args
        sub = command.get_command(ctx, name)
        if sub is None:
            raise UsageError(f"no command {name!r}")
        path.append(name)
        command = sub
        if hasattr(command, "list_commands"):
            ctx = typer.Context(command, info_name=name, parent=ctx)
    parsed = command.make_context(path[-1], list(args), parent=ctx)
    return " ".join(path), parsed.params


def _check_pending(argv: list[str]) -> None:
    spec = PENDING_COMMANDS[argv[1]]
    words = argv[2:]
    while words:
        option, value, *words = words
        assert option in spec, f"{option} is not an option of recur {argv[1]}"
        if spec[option] is int:
            int(value)
    for option in spec:
        assert _option(argv, option), f"recur {argv[1]} without {option}"


def test_every_file_parses() -> None:
    assert COMPOSE.exists() and (DEPLOY / "Dockerfile").exists()
    assert _compose()["services"]
    kinds = {doc["kind"] for doc in _kubernetes()}
    assert kinds >= {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "HorizontalPodAutoscaler",
        "CronJob",
        "Job",
    }


def test_every_recur_command_parses_with_the_real_cli() -> None:
    commands = _all_commands()
    seen = set()
    for argv in commands:
        if argv[1] in PENDING_COMMANDS:
            _check_pending(argv)
            seen.add(argv[1])
            continue
        path, params = _parse(argv)
        seen.add(path)
        if path == "serve":
            assert params["service"] in SERVICE_NAMES
            assert isinstance(params["port"], int)
    assert seen >= {"serve", "gateway", "bill-run", "migrate"}
    # The parse is not a formality.
    with pytest.raises(UsageError):
        _parse(["recur", "serve", "--no-such-option"])
    with pytest.raises(UsageError):
        _parse(["recur", "serve", "--service", "customers", "--port", "eighty"])


def test_pending_commands_are_still_missing_from_the_cli() -> None:
    """A command listed as pending is checked against its spec only while the CLI lacks it."""
    for name in PENDING_COMMANDS:
        with pytest.raises(UsageError, match="no command"):
            _parse(["recur", name, "--help"])


def _served(commands: list[list[str]]) -> dict[str, int]:
    """Service name -> port, from the `serve --service` lines."""
    return {
        _option(argv, "--service")[0]: int(_option(argv, "--port")[0])
        for argv in commands
        if argv[1] == "serve"
    }


def _upstreams(argv: list[str]) -> dict[str, list[str]]:
    upstreams = {}
    for value in _option(argv, "--upstream"):
        name, _, urls = value.partition("=")
        upstreams[name] = urls.split(",")
    return upstreams


def test_kubernetes_deployments_services_probes_and_autoscalers() -> None:
    docs = _kubernetes()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    autoscaled = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    ports: dict[str, int] = {}  # Service name -> the port it is reached on
    for name, deployment in deployments.items():
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        [argv] = _recur_commands(container["command"])
        port = int(_option(argv, "--port")[0])
        assert [p["containerPort"] for p in container["ports"]] == [port], name
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
        service = services[name]
        assert service["spec"]["selector"].items() <= labels.items()
        [service_port] = service["spec"]["ports"]
        assert service_port["targetPort"] == port, name
        ports[name] = service_port["port"]
        assert name in autoscaled, f"{name} has no HorizontalPodAutoscaler"
    assert autoscaled <= set(deployments)

    commands = [line for _, c in _containers(docs) for line in _recur_commands(c["command"])]
    served = _served(commands)
    assert set(served) == set(SERVICE_NAMES)
    assert set(deployments) == {*SERVICE_NAMES, "gateway"}
    [gateway] = [argv for argv in commands if argv[1] == "gateway"]
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    service_urls = Settings(service_urls=config["RECUR_SERVICE_URLS"]).service_urls
    reached = {**service_urls, **_upstreams(gateway)}
    assert set(_upstreams(gateway)) == set(service_urls) == set(SERVICE_NAMES)
    for name, urls in reached.items():
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname == name and parts.port == ports[name], url


def test_compose_services_ports_healthchecks_and_upstreams() -> None:
    compose = _compose()["services"]
    commands = {
        name: line
        for name, service in compose.items()
        for line in _recur_commands(_compose_command(service))
    }
    served = _served(list(commands.values()))
    assert set(served) == set(SERVICE_NAMES)
    assert {"postgres", "redis", "migrate", "gateway", "bill-run"} <= set(compose)
    for name, argv in commands.items():
        if argv[1] in ("serve", "gateway"):
            port = int(_option(argv, "--port")[0])
            check = " ".join(compose[name]["healthcheck"]["test"])
            assert f"127.0.0.1:{port}/readyz" in check, name
    for name in served:
        assert commands[name][:4] == ["recur", "serve", "--service", name]
    environment = compose["gateway"]["environment"]
    service_urls = Settings(service_urls=environment["RECUR_SERVICE_URLS"]).service_urls
    reached = {**service_urls, **_upstreams(commands["gateway"])}
    assert set(reached) == set(SERVICE_NAMES)
    for name, urls in reached.items():
        for url in urls:
            parts = urlsplit(url)
            assert parts.hostname == name and parts.port == served[name], url
    for name, service in compose.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in compose, f"{name} depends on unknown {dependency}"
    assert compose["migrate"]["command"] == ["recur", "migrate"]


def _recur_variables() -> Iterator[tuple[str, str]]:
    """(where, name) of every RECUR_* variable the files set or read."""
    for name, service in _compose()["services"].items():
        for variable in service.get("environment", {}):
            yield f"compose {name}", variable
    for doc in _kubernetes():
        for section in ("data", "stringData"):
            for variable in doc.get(section, {}) if doc["kind"] in ("ConfigMap", "Secret") else ():
                yield f"{doc['kind']} {doc['metadata']['name']}", variable
        for workload, container in _containers([doc]):
            for env in container.get("env", []):
                yield f"{workload['metadata']['name']}", env["name"]
    for path in (COMPOSE, DEPLOY / "Dockerfile", *KUBERNETES.glob("*.yaml")):
        for variable in re.findall(r"\bRECUR_[A-Z_]+", path.read_text()):
            yield path.name, variable


def test_every_recur_variable_is_a_setting() -> None:
    fields = {f"RECUR_{name.upper()}" for name in Settings.model_fields}
    found = list(_recur_variables())
    assert {name for _, name in found} >= {
        "RECUR_DATABASE_URL",
        "RECUR_REDIS_URL",
        "RECUR_LOG_FORMAT",
        "RECUR_INTERNAL_TOKEN",
        "RECUR_SERVICE_URLS",
    }
    for where, name in found:
        if name.startswith("RECUR_"):
            assert name in fields, f"{where}: {name} is not a setting of recur.settings.Settings"


def test_secrets_are_placeholders_and_settings_load() -> None:
    docs = _kubernetes()
    [secret] = [d for d in docs if d["kind"] == "Secret"]
    for name, value in secret["stringData"].items():
        assert "REPLACE_ME" in value, f"{name} looks like a real secret"
    [config] = [d for d in docs if d["kind"] == "ConfigMap"]
    environment = {**config["data"], **secret["stringData"]}
    settings = Settings(**{k.removeprefix("RECUR_").lower(): v for k, v in environment.items()})
    assert settings.log_format == "json"
    assert settings.database_url.startswith("postgresql+asyncpg://")
    # Compose takes the internal token from the environment, never from the file.
    compose_token = _compose()["services"]["gateway"]["environment"]["RECUR_INTERNAL_TOKEN"]
    assert compose_token.startswith("${RECUR_INTERNAL_TOKEN:?")


def test_kustomization_lists_files_that_exist() -> None:
    [kustomization] = _documents(KUBERNETES / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).exists(), resource


def test_dockerfile_installs_the_lock_with_hashes() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY requirements.lock" in dockerfile
    assert "pip install --require-hashes --no-deps -r requirements.lock" in dockerfile
    assert "pip install --no-deps --no-build-isolation ." in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.MULTILINE)  # not root
