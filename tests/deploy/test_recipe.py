"""The deploy artefacts run as written. No image is built here (no registry is reachable), so the
commands the Dockerfile, compose.yaml and the Kubernetes manifests run are read out of those files and
run as they are: the image's install into a fresh venv, the migration Job's command, the first key
(docs/operations.md, Deploying), the image's entry point with its environment, then its HEALTHCHECK and
the Deployment's probes against it, and SIGTERM; and compose's migrate, replica and sample worker, with
compose's environment, working a job. Every JOBPULSE_* variable they set must be a setting."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.polling import eventually
from support.servers import free_port

import jobpulse

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def _dockerfile() -> dict[str, Any]:
    """The final stage's ENV, ENTRYPOINT + CMD and HEALTHCHECK command, and the build stage's pip install
    arguments, from the Dockerfile (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, Any] = {"env": {}}
    for line in text.splitlines():
        word, _, rest = line.strip().partition(" ")
        if word == "RUN" and "pip install" in rest:
            found["pip_install"] = shlex.split(rest.split("pip install", 1)[1])
        elif word == "ENV":
            found["env"].update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
        elif word in ("ENTRYPOINT", "CMD"):
            found[word] = json.loads(rest)
        elif word == "HEALTHCHECK":
            found["healthcheck"] = json.loads(rest.split(" CMD ", 1)[1])
    return found


def _manifests() -> dict[str, dict[str, Any]]:
    docs = [yaml.safe_load(p.read_text()) for p in sorted(KUBERNETES.glob("*.yaml"))]
    return {d["kind"]: d for d in docs}


def _container(kind: str) -> dict[str, Any]:
    return _manifests()[kind]["spec"]["template"]["spec"]["containers"][0]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "compose.yaml").read_text())["services"])


def _settings() -> set[str]:
    reference = (ROOT / "docs" / "reference" / "configuration.md").read_text()
    return set(re.findall(r"^\| `(JOBPULSE_[A-Z0-9_]+)`", reference, flags=re.M))


def test_every_variable_the_artefacts_set_is_a_setting_of_the_server_or_the_command() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    used = set(_dockerfile()["env"]) | {
        e["name"] for k in ("Deployment", "Job") for e in _container(k)["env"]
    }
    for service in compose["services"].values():
        used |= set(service.get("environment") or {})
    used = {name for name in used if name.startswith("JOBPULSE_")}
    assert {"JOBPULSE_DATABASE_URL", "JOBPULSE_HOST", "JOBPULSE_TARGET", "JOBPULSE_INSECURE"} <= used
    assert used - _settings() == set()


def test_the_deployment_and_the_job_run_the_image_as_the_dockerfile_does() -> None:
    """The Deployment runs the image's own entry point; the Job its migrate command; both as the
    image's user, probing the paths and port the image serves and its HEALTHCHECK reads."""
    image = _dockerfile()
    server, job = _container("Deployment"), _container("Job")
    assert (
        server["command"] + server["args"]
        == image["ENTRYPOINT"] + image["CMD"]
        == ["jobpulse-server", "serve"]
    )
    assert job["command"] + job["args"] == ["jobpulse-server", "migrate"]
    ports = {p["name"]: p["containerPort"] for p in server["ports"]}
    assert ports == {
        "grpc": int(image["env"]["JOBPULSE_PORT"]),
        "http": int(image["env"]["JOBPULSE_HTTP_PORT"]),
    }
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert f"127.0.0.1:{ports['http']}/readyz" in image["healthcheck"][-1]
    pod = _manifests()["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert (ROOT / "Dockerfile").read_text().count("USER 10001:10001") == 1


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with what the image's build stage installs, by the same pip arguments."""
    venv = tmp_path_factory.mktemp("image") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    args = _dockerfile()["pip_install"]
    assert args == ["--no-cache-dir", "./client", "./service"], args
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return venv


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return 0


@pytest.fixture
def served(image_venv: Path, database_url: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The migration Job, the first key, then the image's entry point with the image's environment (its
    ports moved to free ones, its database the test's): the running server, until SIGTERM."""
    image = _dockerfile()
    env, _, http_port = _image_env(image_venv, database_url)
    job = _container("Job")
    migrated = subprocess.run(
        job["command"] + job["args"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert migrated.returncode == 0, migrated.stderr
    # On 0.0.0.0 the server serves only once a key exists (docs/operations.md, Deploying).
    key = subprocess.run(
        ["jobpulse-server", "keys", "create", "--name", "ops", "--role", "admin"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert key.returncode == 0, key.stderr
    log = tmp_path / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            image["ENTRYPOINT"] + image["CMD"], env=env, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield {
            "proc": proc,
            "env": env,
            "http_port": http_port,
            "log": log,
            "healthcheck": image["healthcheck"],
        }
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


@pytest.mark.empty_database  # the migration Job's command migrates it
@pytest.mark.slow  # 36 s to set up its image venv: make test-slow (hadolint and the compose test stay)
def test_the_image_commands_migrate_serve_and_answer_the_probes_then_stop_on_sigterm(
    served: dict[str, Any],
) -> None:
    proc, port = served["proc"], served["http_port"]
    healthcheck = [part.replace("127.0.0.1:8080", f"127.0.0.1:{port}") for part in served["healthcheck"]]

    def healthy() -> bool:
        assert proc.poll() is None, served["log"].read_text()[-3000:]
        return subprocess.run(healthcheck, env=served["env"], capture_output=True, timeout=10).returncode == 0

    eventually(healthy, timeout=60, what="the image's HEALTHCHECK to pass")
    assert _get(f"http://127.0.0.1:{port}/healthz") == 200  # the Deployment's liveness probe
    assert _get(f"http://127.0.0.1:{port}/readyz") == 200  # its readiness probe
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, served["log"].read_text()[-3000:]


def _image_env(image_venv: Path, database_url: str) -> tuple[dict[str, str], int, int]:
    """The image's environment with its ports moved to free ones and the test's database, the venv first
    on PATH as /opt/jobpulse/bin is in the image."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBPULSE_")}
    env.update(_dockerfile()["env"])
    env["PATH"] = f"{image_venv / 'bin'}{os.pathsep}{os.environ['PATH']}"
    grpc_port, http_port = free_port(), free_port()
    env.update(
        JOBPULSE_DATABASE_URL=database_url, JOBPULSE_PORT=str(grpc_port), JOBPULSE_HTTP_PORT=str(http_port)
    )
    return env, grpc_port, http_port


@pytest.mark.empty_database  # compose's migrate service migrates it
def test_compose_migrates_then_a_replica_serves_and_its_sample_worker_works_a_job(
    image_venv: Path, database_url: str, tmp_path: Path
) -> None:
    """compose.yaml's services as compose would run them from the image: ``migrate``, then ``jobpulse-2``
    (open mode, as compose sets it), then ``worker`` with its own command and environment (the replica's
    address moved to this host), which works a job of the kind it claims."""
    image, services = _dockerfile(), _compose()
    env, grpc_port, _ = _image_env(image_venv, database_url)

    def command(service: dict[str, Any]) -> list[str]:
        return list(service.get("entrypoint") or image["ENTRYPOINT"]) + list(
            service.get("command") or image["CMD"]
        )

    def service_env(service: dict[str, Any]) -> dict[str, str]:
        values = {**env, **{k: str(v) for k, v in (service.get("environment") or {}).items()}}
        values["JOBPULSE_DATABASE_URL"] = database_url  # compose's points at its own PostgreSQL
        if "JOBPULSE_TARGET" in values:
            values["JOBPULSE_TARGET"] = values["JOBPULSE_TARGET"].replace(
                "jobpulse-2:50051", f"127.0.0.1:{grpc_port}"
            )
        return values

    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["jobpulse-2"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["worker"]["environment"]["JOBPULSE_TARGET"] == "jobpulse-2:50051"
    migrated = subprocess.run(
        command(services["migrate"]), env=service_env(services["migrate"]), cwd=tmp_path,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert migrated.returncode == 0, migrated.stderr
    started: list[subprocess.Popen[bytes]] = []
    try:
        for name in ("jobpulse-2", "worker"):
            with open(tmp_path / f"{name}.log", "wb") as out:
                started.append(
                    subprocess.Popen(
                        command(services[name]),
                        env=service_env(services[name]),
                        cwd=tmp_path,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        kind = command(services["worker"])[command(services["worker"]).index("--kind") + 1]
        with jobpulse.Client(f"127.0.0.1:{grpc_port}", timeout=10.0) as client:
            job = eventually(
                lambda: _create_or_none(client, kind), timeout=60, what="the replica to take CreateJob"
            )
            done = client.wait(job.id, timeout=60)
        logs = {p.name: p.read_text()[-2000:] for p in tmp_path.glob("*.log")}
        assert done.state == jobpulse.JobState.Value("JOB_STATE_COMPLETED"), logs
        assert all(p.poll() is None for p in started), logs
    finally:
        for proc in reversed(started):
            proc.terminate()
            proc.wait(30)


def _create_or_none(client: jobpulse.Client, kind: str) -> Any:
    try:
        return client.create_job(kind=kind, total_items=8, chunk_size=2)
    except jobpulse.errors.Unavailable:
        return None
