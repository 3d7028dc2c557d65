"""deploy/: the production instance really works, checked against the real things.

- `deploy/dagster.yaml`'s storage, queue, retries and monitoring, on a real PostgreSQL server (the
  Debian `postgresql` binaries, started here with TLS on and password auth): a run lands in Postgres.
- its `run_launcher` against the K8sRunLauncher's own config schema, and the Kubernetes Job it makes.
- the commented DockerRunLauncher alternative and deploy/workspace.yaml against their schemas.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import process_config
from dagster._core.instance.config import dagster_instance_config_schema, validate_concurrency_config
from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
DEPLOY_YAML = DEPLOY_DIR / "dagster.yaml"
PG_ENV = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USERNAME", "DAGSTER_PG_PASSWORD")


def _deploy_config() -> dict:
    return yaml.safe_load(DEPLOY_YAML.read_text(encoding="utf-8"))


# --- a throwaway PostgreSQL server -------------------------------------------------------------


@dataclass(frozen=True)
class PostgresServer:
    port: int
    db_name: str
    username: str
    password: str
    admin_username: str
    admin_password: str

    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads, pointing at this server."""
        return {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": self.db_name,
            "DAGSTER_PG_USERNAME": self.username,
            "DAGSTER_PG_PASSWORD": self.password,
        }

    def connect(self, *, admin: bool = False, db_name: str | None = None):
        import psycopg2  # a dependency of dagster-postgres

        return psycopg2.connect(
            host="127.0.0.1",
            port=self.port,
            dbname=db_name or self.db_name,
            user=self.admin_username if admin else self.username,
            password=self.admin_password if admin else self.password,
            sslmode="require",
            connect_timeout=10,
        )


def _postgres_bin_dir() -> Path | None:
    """The newest Debian PostgreSQL with both initdb and pg_ctl."""
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")]
    usable = [p for p in candidates if (p / "initdb").is_file() and (p / "pg_ctl").is_file()]
    usable.sort(key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return usable[-1] if usable else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _ServerProcess:
    """initdb + pg_ctl, as the `postgres` user when we are root (PostgreSQL refuses to run as root)."""

    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.owner = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    def run(self, *args: str, timeout: float = 60) -> None:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.owner is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")

    def give_to_owner(self, *paths: Path) -> None:
        if self.owner is not None:
            for path in paths:
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "20", "stop", timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired):
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():  # the postmaster's pid is the file's first line
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)


def _self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate so the server speaks TLS: the deploy file demands sslmode=require."""
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _postgres_bin_dir()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _user_exists("postgres")):
        pytest.skip("running as root needs `runuser` and the `postgres` user to start PostgreSQL")
    if shutil.which("openssl") is None:
        pytest.skip("openssl not found: needed for the server certificate (deploy uses sslmode=require)")

    # Not under pytest's tmp dir: that one is private to root, and the server runs as `postgres`.
    root = Path(tempfile.mkdtemp(prefix="tm2-pg-"))
    server = _ServerProcess(bin_dir, root)
    admin_password = secrets.token_urlsafe(16)
    try:
        socket_dir = root / "socket"
        socket_dir.mkdir()
        password_file = root / "admin.pw"
        password_file.write_text(admin_password + "\n")
        cert, key = _self_signed_cert(root)
        server.give_to_owner(root, socket_dir, password_file, cert, key)
        server.run("initdb", "-D", str(server.data), "-U", "tm2_admin", f"--pwfile={password_file}",
                   "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync")  # fmt: skip
        port = _free_port()
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{socket_dir}'\n"
                f"ssl = on\nssl_cert_file = '{cert}'\nssl_key_file = '{key}'\n"
                "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            )
        log = str(root / "server.log")
        server.run("pg_ctl", "-D", str(server.data), "-l", log, "-w", "-t", "60", "start", timeout=90)
        info = PostgresServer(
            port=port,
            db_name="dagster",
            username="dagster",
            password=secrets.token_urlsafe(16),
            admin_username="tm2_admin",
            admin_password=admin_password,
        )
        _create_database(info)
        yield info
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _create_database(info: PostgresServer) -> None:
    from psycopg2 import sql

    connection = info.connect(admin=True, db_name="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(info.username)),
                           [info.password])  # fmt: skip
            cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(info.db_name), sql.Identifier(info.username)))  # fmt: skip
    finally:
        connection.close()


# --- the production instance on that server ----------------------------------------------------


@dg.asset
def deploy_smoke_rows() -> int:
    """A trivial asset: enough to write a run, its events and an asset materialization."""
    return 3


@pytest.mark.postgres
def test_deploy_instance_stores_runs_in_postgres(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in postgres_server.env().items():
        monkeypatch.setenv(name, value)
    # Everything from the deploy file but the Kubernetes launcher (no cluster here): the default one.
    instance_config = {key: value for key, value in _deploy_config().items() if key != "run_launcher"}
    assert "postgres" in instance_config["storage"]
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(yaml.safe_dump(instance_config), encoding="utf-8")

    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # The deploy file's operational settings are what the instance actually uses.
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        assert instance.run_monitoring_enabled
        queue = instance.get_concurrency_config().run_queue_config
        assert queue is not None and queue.max_concurrent_runs == 4
        assert {limit["key"] for limit in queue.tag_concurrency_limits} == {"dagster/partition", "tm2/night"}

        result = dg.materialize([deploy_smoke_rows], instance=instance, tags={"tm2/test": "deploy"})
        assert result.success
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert instance.get_latest_materialization_event(dg.AssetKey("deploy_smoke_rows")) is not None

    # Read the rows straight from PostgreSQL: the run really landed there, not in a local file.
    connection = postgres_server.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT status FROM runs WHERE run_id = %s", [result.run_id])
            assert cursor.fetchall() == [("SUCCESS",)]
            cursor.execute(
                "SELECT dagster_event_type FROM event_logs"
                " WHERE run_id = %s AND dagster_event_type IS NOT NULL",
                [result.run_id],
            )
            event_types = {row[0] for row in cursor.fetchall()}
            # Run-level events keep their legacy names in storage (PIPELINE_*).
            expected = {"PIPELINE_START", "STEP_SUCCESS", "ASSET_MATERIALIZATION", "PIPELINE_SUCCESS"}
            assert expected <= event_types
            cursor.execute("SELECT asset_key FROM asset_keys")
            assert '["deploy_smoke_rows"]' in {row[0] for row in cursor.fetchall()}
            cursor.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            assert cursor.fetchone() == (True,)
    finally:
        connection.close()
    assert not any(dagster_home.glob("**/*.db")), "no SQLite storage may be created next to the instance"


# --- the run launcher and the other deploy files, against their schemas ------------------------


def _k8s_launcher_config() -> dict:
    config = _deploy_config()["run_launcher"]
    assert (config["module"], config["class"]) == ("dagster_k8s", "K8sRunLauncher")
    return config["config"]


def test_deploy_run_launcher_matches_the_k8s_schema() -> None:
    from dagster_k8s import K8sRunLauncher

    launcher_config = _k8s_launcher_config()
    checked = process_config(K8sRunLauncher.config_type(), launcher_config)
    assert checked.success, checked.errors
    assert checked.value["postgres_password_secret"] and checked.value["instance_config_map"]

    broken_copies = [
        {**launcher_config, "load_incluster_config": "yes"},  # a string where a bool belongs
        {**launcher_config, "env_secrets": "tm2-pipeline-secrets"},  # a string where a list belongs
        {**launcher_config, "job_namespace": ["tm2"]},
        {key: value for key, value in launcher_config.items() if key != "instance_config_map"},  # required
        {**launcher_config, "job_imag": "typo"},  # an unknown field
    ]
    for broken in broken_copies:
        assert not process_config(K8sRunLauncher.config_type(), broken).success, broken


def test_deploy_run_launcher_builds_the_intended_kubernetes_job(tmp_path: Path) -> None:
    """The launcher, built from the deploy config, turns a run into the Job we mean (no cluster needed)."""
    import kubernetes
    from dagster_k8s import K8sRunLauncher
    from dagster_k8s.container_context import K8sContainerContext
    from dagster_k8s.job import construct_dagster_k8s_job

    kubeconfig = tmp_path / "kubeconfig"  # an unreachable cluster: nothing is ever sent
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "offline",
        "clusters": [{"name": "offline", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "nobody", "user": {"token": "unused"}}],
        "contexts": [{"name": "offline", "context": {"cluster": "offline", "user": "nobody"}}],
    }))  # fmt: skip
    outside_cluster = {
        **_k8s_launcher_config(),
        "load_incluster_config": False,
        "kubeconfig_file": str(kubeconfig),
    }
    checked = process_config(K8sRunLauncher.config_type(), outside_cluster)
    assert checked.success, checked.errors
    launcher = K8sRunLauncher(**checked.value)

    run = dg.DagsterRun(job_name="ingest_tm2_file", run_id="0f3c2a1e-0000-4000-8000-000000000000")
    context = K8sContainerContext.create_for_run(run, launcher, include_run_tags=True)
    job = construct_dagster_k8s_job(
        context.get_k8s_job_config(job_image=None, run_launcher=launcher),
        args=["dagster", "api", "execute_run", "{}"],
        job_name="dagster-run-0f3c2a1e",
        pod_name="dagster-run-0f3c2a1e",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    manifest = kubernetes.client.ApiClient().sanitize_for_serialization(job)
    assert context.namespace == "tm2"
    assert manifest["spec"]["backoffLimit"] == 0  # run_retries decides, not Kubernetes
    pod = manifest["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"].startswith("registry.example.org/health/tm2-pipeline:")
    assert {"secretRef": {"name": "tm2-pipeline-secrets"}} in container["envFrom"]
    assert {"configMapRef": {"name": "tm2-pipeline-env"}} in container["envFrom"]
    password = next(env for env in container["env"] if env["name"] == "DAGSTER_PG_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"] == {
        "name": "tm2-dagster-postgresql",
        "key": "postgresql-password",
    }
    assert not any("value" in env and "PASSWORD" in env["name"] for env in container["env"])
    assert {"name": "tm2-home", "mountPath": "/var/lib/tm2"} in container["volumeMounts"]
    assert pod["volumes"] == [{"name": "tm2-home", "persistentVolumeClaim": {"claimName": "tm2-home"}}]
    assert pod["serviceAccountName"] == "tm2-dagster-runs"


def test_deploy_instance_and_workspace_files_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PG_ENV:
        monkeypatch.setenv(name, "5432" if name == "DAGSTER_PG_PORT" else "placeholder")
    monkeypatch.setenv("TM2_CODE_SERVER_HOST", "tm2-code-server")
    config = _deploy_config()
    checked = process_config(dagster_instance_config_schema(), config)
    assert checked.success, checked.errors
    validate_concurrency_config(config)  # raises when run_coordinator and concurrency disagree
    assert config["telemetry"] == {"enabled": False}
    assert config["run_retries"]["retry_on_asset_or_op_failure"] is False

    workspace = yaml.safe_load((DEPLOY_DIR / "workspace.yaml").read_text(encoding="utf-8"))
    checked = process_config(WORKSPACE_CONFIG_SCHEMA, workspace)
    assert checked.success, checked.errors
    assert checked.value["load_from"] == [
        {"grpc_server": {"host": "tm2-code-server", "port": 4266, "location_name": "tm2_pipeline"}}
    ]


def test_commented_docker_launcher_alternative_is_valid() -> None:
    """The commented-out DockerRunLauncher block must still be valid config once uncommented."""
    from dagster_docker import DockerRunLauncher

    lines = DEPLOY_YAML.read_text(encoding="utf-8").splitlines()
    start = lines.index("# run_launcher:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    launcher = yaml.safe_load("\n".join(block))["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_docker", "DockerRunLauncher")
    checked = process_config(DockerRunLauncher.config_type(), launcher["config"])
    assert checked.success, checked.errors
