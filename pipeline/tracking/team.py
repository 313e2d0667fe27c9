"""A team-sized tracking server on one host: PostgreSQL in a folder, and `mlflow server` on it.

    python -m pipeline.tracking.team start [--dir mlruns/team] [--host 127.0.0.1] [--port 5000] [--workers 4]
    python -m pipeline.tracking.team status | stop [--dir ...]
    python -m pipeline.tracking.team start --backend sqlite     # the same server on SQLite (no PostgreSQL)
    python -m pipeline.tracking.team reap [--uri URI]          # runs left RUNNING by a dead writer -> KILLED

`start` initialises a PostgreSQL cluster in DIR/pg the first time (superuser `postgres`, reached only on a
Unix socket inside DIR; TCP logins by password), creates the role and database `mlflow` (its password in
DIR/pgpass, mode 0600, read by libpq: never on a command line), starts PostgreSQL on 127.0.0.1:PG_PORT and
`mlflow server` on it with served artifacts in DIR/artifacts. Clients then log with
`tracking=server tracking.uri=http://HOST:PORT`. `stop` stops both; the data stays in DIR.

Run as root (a container), PostgreSQL's programs run as the `postgres` user: initdb refuses root.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.harness.paths import ROOT
from pipeline.tracking.store import StoreError

DEFAULT_DIR = ROOT / "mlruns" / "team"
PG_GLOB = "/usr/lib/postgresql/*/bin"  # Debian's versioned layout; pg_ctl is not on PATH there
START_SECONDS = 90.0  # MLflow's first start on an empty database creates its schema: ~15 s on 2 cores
STOP_SECONDS = 15.0
DATABASE = ROLE = "mlflow"


class TeamError(Exception):
    """A setup problem the user fixes (PostgreSQL missing, a port taken, a server that did not come up)."""


@dataclass(frozen=True)
class Team:
    """Where the team server's pieces live, and the ports they use."""

    dir: Path
    host: str = "127.0.0.1"
    port: int = 5000
    pg_port: int = 5433
    workers: int = 4
    backend: str = "postgres"  # or "sqlite": DIR/mlflow.db, no PostgreSQL (a quick server; writes serialized)

    @property
    def pgdata(self) -> Path:
        return self.dir / "pg"

    @property
    def socket_dir(self) -> Path:
        return self.dir / "socket"

    @property
    def pgpass(self) -> Path:
        return self.dir / "pgpass"

    @property
    def pid_file(self) -> Path:
        return self.dir / "mlflow.pid"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The store MLflow's server uses: no password in it (libpq reads DIR/pgpass)."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.dir / 'mlflow.db'}"
        return f"postgresql+psycopg://{ROLE}@127.0.0.1:{self.pg_port}/{DATABASE}"


def pg_bin(program: str) -> str:
    """A PostgreSQL program's path: on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(Path("/").glob(PG_GLOB.lstrip("/")), key=lambda p: int(p.parent.name), reverse=True)
    for folder in candidates:
        if (folder / program).is_file():
            return str(folder / program)
    raise TeamError(
        f"PostgreSQL is not installed ({program} is neither on PATH nor in {PG_GLOB}): "
        "apt-get install postgresql (Debian/Ubuntu), or your system's package"
    )


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL's programs run as `postgres` under root (initdb and postgres refuse to run as root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str, env: dict | None = None) -> str:
    """Run a PostgreSQL program; its own error as one line if it fails."""
    proc = subprocess.run(_as_owner(cmd), capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise TeamError(f"{what} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout


def _psql(team: Team, sql: str) -> str:
    """One statement as the superuser over the cluster's own Unix socket."""
    cmd = [pg_bin("psql"), "-h", str(team.socket_dir), "-p", str(team.pg_port), "-U", "postgres"]
    return _run([*cmd, "-d", "postgres", "-tAc", sql], f"psql ({sql.split()[0]})").strip()


def postgres_running(team: Team) -> bool:
    """Whether the cluster in DIR/pg runs (pg_ctl status)."""
    if not (team.pgdata / "PG_VERSION").is_file():
        return False
    proc = subprocess.run(
        _as_owner([pg_bin("pg_ctl"), "-D", str(team.pgdata), "status"]), capture_output=True, check=False
    )
    return proc.returncode == 0


def reachable(folder: Path) -> None:
    """Under root: the `postgres` user can write `folder` (every folder above it lets it through), else one line."""
    proc = subprocess.run(["runuser", "-u", "postgres", "--", "test", "-w", str(folder)], check=False)
    if proc.returncode != 0:
        private = next((p for p in folder.parents if p.exists() and not p.stat().st_mode & 0o001), None)
        where = f" ({private} is private: mode {private.stat().st_mode & 0o777:o})" if private else ""
        raise TeamError(
            f"PostgreSQL runs as the `postgres` user, which cannot reach {folder}{where}: "
            "start it with --dir in a folder it can reach (e.g. --dir /srv/gradlab-team), or clone the project there"
        )


def init_postgres(team: Team) -> None:
    """A new cluster in DIR/pg and the `mlflow` role's password in DIR/pgpass (once)."""
    team.dir.mkdir(parents=True, exist_ok=True)
    if (team.pgdata / "PG_VERSION").is_file():
        return
    team.pgdata.mkdir(mode=0o700, exist_ok=True)
    team.socket_dir.mkdir(mode=0o700, exist_ok=True)
    if os.geteuid() == 0:
        for folder in (team.pgdata, team.socket_dir):
            shutil.chown(folder, "postgres", "postgres")
        reachable(team.pgdata)
    cmd = [pg_bin("initdb"), "-D", str(team.pgdata), "-U", "postgres", "-E", "UTF8"]
    _run([*cmd, "--auth-local=trust", "--auth-host=scram-sha-256"], "initdb")
    password = secrets.token_urlsafe(24)
    team.pgpass.write_text(f"127.0.0.1:{team.pg_port}:{DATABASE}:{ROLE}:{password}\n")
    team.pgpass.chmod(0o600)  # libpq ignores a password file others can read


def start_postgres(team: Team) -> None:
    """Start the cluster on 127.0.0.1:PG_PORT (waits until it accepts connections)."""
    if postgres_running(team):
        return
    options = f"-p {team.pg_port} -k {team.socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
    log = team.dir / "postgres.log"
    if os.geteuid() == 0 and not log.exists():
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    _run([pg_bin("pg_ctl"), "-D", str(team.pgdata), "-l", str(log), "-o", options, "-w", "start"], "pg_ctl start")


def stop_postgres(team: Team) -> None:
    """Stop the cluster (fast: open sessions are ended)."""
    if postgres_running(team):
        _run([pg_bin("pg_ctl"), "-D", str(team.pgdata), "-m", "fast", "-w", "stop"], "pg_ctl stop")


def ensure_database(team: Team) -> None:
    """The `mlflow` role (password from DIR/pgpass) and its database, created once."""
    password = team.pgpass.read_text().strip().rsplit(":", 1)[1]
    if not _psql(team, f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
        _psql(team, f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
    if not _psql(team, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"):
        _psql(team, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def _pid(team: Team) -> int | None:
    """The running MLflow server's pid, from DIR/mlflow.pid (None when gone)."""
    try:
        pid = int(team.pid_file.read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def start_mlflow(team: Team) -> None:
    """`mlflow server` on PostgreSQL with served artifacts, detached; waits for its /health."""
    if _pid(team) is not None:
        return
    if _healthy(team.url, 1.0):
        raise TeamError(f"port {team.port}: another server already answers at {team.url}; choose --port")
    if team.backend == "postgres":
        try:
            import psycopg  # noqa: F401  (the driver of postgresql+psycopg://)
        except ImportError:
            raise TeamError("the PostgreSQL driver is not installed: pip install -e '.[postgres]'") from None
    team.dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        team.backend_uri,
        "--artifacts-destination",
        str(team.dir / "artifacts"),
        "--serve-artifacts",
        "--host",
        team.host,
        "--port",
        str(team.port),
        "--workers",
        str(team.workers),
    ]
    if team.host not in ("127.0.0.1", "localhost"):
        cmd += ["--allowed-hosts", f"{team.host},{team.host}:{team.port},localhost,127.0.0.1"]
    env = {**os.environ, "PGPASSFILE": str(team.pgpass), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(team.dir / "mlflow.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env, start_new_session=True)
    team.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if _healthy(team.url):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    stop_mlflow(team)
    raise TeamError(f"mlflow server did not come up at {team.url}: see {team.dir / 'mlflow.log'}")


def stop_mlflow(team: Team) -> None:
    """Stop the MLflow server (its whole process group: uvicorn's workers too)."""
    pid = _pid(team)
    if pid is None:
        team.pid_file.unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while time.monotonic() < deadline and _pid(team) is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    team.pid_file.unlink(missing_ok=True)


def make_folder(team: Team) -> None:
    """The team's folder, made if missing and writable, else one line (TeamError) before anything starts."""
    try:
        team.dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=team.dir):
            pass
    except OSError as e:
        raise TeamError(f"--dir {team.dir}: cannot be made or written ({e.strerror or e})") from None


def start(team: Team) -> str:
    """PostgreSQL, the database and the MLflow server, each started unless it runs; the line to print."""
    if team.backend == "postgres":
        pg_bin("pg_ctl")  # PostgreSQL installed? Said before anything is made
    make_folder(team)
    if team.backend == "postgres":
        init_postgres(team)
        start_postgres(team)
        ensure_database(team)
    start_mlflow(team)
    store = f"PostgreSQL at 127.0.0.1:{team.pg_port}/{DATABASE}" if team.backend == "postgres" else team.backend_uri
    return (
        f"team server: {team.url} (MLflow on {store}, artifacts in {team.dir / 'artifacts'}); "
        f"log with: tracking=server tracking.uri={team.url}"
    )


def stop(team: Team) -> str:
    """The MLflow server, then PostgreSQL; the data stays."""
    stop_mlflow(team)
    if team.backend == "postgres":
        stop_postgres(team)
    return f"team server stopped (data kept in {team.dir})"


def status(team: Team) -> str:
    """One line: what runs."""
    ml = "answering" if _healthy(team.url) else ("started, not answering" if _pid(team) else "stopped")
    if team.backend == "sqlite":
        return f"team server at {team.url}: MLflow {ml} on {team.backend_uri}"
    pg = "running" if postgres_running(team) else "stopped"
    return f"team server at {team.url}: MLflow {ml}; PostgreSQL ({team.pgdata}) {pg}"


def reap(uri: str) -> str:
    """Runs left RUNNING by a writer process of this host that is gone, marked KILLED; one line."""
    from pipeline.tracking.queries import end_orphaned_runs
    from pipeline.tracking.store import check_store

    ended = end_orphaned_runs(check_store(uri))  # a store that cannot be used: StoreError, one line
    return f"{len(ended)} run(s) left RUNNING by a writer that is gone marked KILLED" + (
        f": {', '.join(ended)}" if ended else ""
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tracking.team", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("start", "stop", "status", "reap"))
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the cluster, artifacts and logs live")
    parser.add_argument("--host", default="127.0.0.1", help="the interface MLflow listens on (0.0.0.0: every one)")
    parser.add_argument("--port", type=int, default=5000, help="MLflow's port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (on 127.0.0.1 only)")
    parser.add_argument("--workers", type=int, default=4, help="MLflow server worker processes")
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres", help="the server's store")
    parser.add_argument("--uri", help="reap: the tracking URI (default: this team server's)")
    args = parser.parse_args(argv)
    team = Team(args.dir.absolute(), args.host, args.port, args.pg_port, args.workers, args.backend)
    try:
        if args.action == "reap":
            print(reap(args.uri or team.url))
        else:
            print({"start": start, "stop": stop, "status": status}[args.action](team))
    except TeamError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except StoreError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
