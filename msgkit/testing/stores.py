"""The idempotency stores that tests use, Redis and PostgreSQL: `$MSGKIT_TEST_REDIS_URL` and
`$MSGKIT_TEST_POSTGRES_URL`, else servers on their default loopback ports, started (and
installed from Debian's packages when root) by `ensure_redis` / `ensure_postgres`.

The PostgreSQL the project starts is its own: a data directory initialised with trust
authentication for local connections and a `test` database, so no system configuration
is changed.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
from pathlib import Path

from msgkit.errors import BrokerUnavailableError
from msgkit.testing.system import apt_install, can_install, ensure_installed, port_open, run, wait_port

REDIS_ENV = "MSGKIT_TEST_REDIS_URL"
POSTGRES_ENV = "MSGKIT_TEST_POSTGRES_URL"
REDIS_URL = os.environ.get(REDIS_ENV) or "redis://127.0.0.1:6379/0"
POSTGRES_URL = os.environ.get(POSTGRES_ENV) or "postgresql://postgres@127.0.0.1:5432/test"
_HOST, _REDIS_PORT, _PG_PORT = "127.0.0.1", 6379, 5432


def _state_dir(name: str) -> Path:
    """Where a service the project starts keeps its files: readable by the service's user."""
    return Path("/var/tmp") / name if os.geteuid() == 0 else Path.home() / ".cache" / "msgkit" / name


def ensure_redis() -> str:
    if os.environ.get(REDIS_ENV):
        return f"using ${REDIS_ENV}"
    if port_open(_HOST, _REDIS_PORT):
        return f"Redis is running on {_HOST}:{_REDIS_PORT}"
    server = ensure_installed("redis-server", "redis-server", "Redis", REDIS_ENV)
    home = _state_dir("msgkit-redis")
    home.mkdir(parents=True, exist_ok=True)
    done = run(server, "--daemonize", "yes", "--bind", _HOST, "--port", str(_REDIS_PORT),
               "--save", "", "--appendonly", "no", "--dir", str(home),
               "--logfile", str(home / "redis.log"), timeout=30)
    if done.returncode != 0 or not wait_port(_HOST, _REDIS_PORT, 30):
        raise BrokerUnavailableError(f"redis-server did not start: {done.stderr[-500:]}; "
                                     f"see {home / 'redis.log'}")
    return f"started Redis on {_HOST}:{_REDIS_PORT}"


def _postgres_bin() -> Path | None:
    """The newest installed server's bin folder (Debian: /usr/lib/postgresql/<v>/bin)."""
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
                if Path(p).parent.parent.name.isdigit()]
    if versions:
        return max(versions, key=lambda bindir: int(bindir.parent.name))
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _psql(*sql_args: str) -> tuple[bool, str]:
    psql = shutil.which("psql")
    if psql is None:
        return True, ""  # nothing to check with: the tests say what is wrong, if anything
    done = run(psql, "-h", _HOST, "-p", str(_PG_PORT), "-U", "postgres", "-d", "postgres",
               "-tA", *sql_args, timeout=30)
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def _ensure_test_database() -> None:
    ok, out = _psql("-c", "SELECT 1 FROM pg_database WHERE datname = 'test'")
    if not ok:
        raise BrokerUnavailableError(
            f"PostgreSQL on {_HOST}:{_PG_PORT} refuses user postgres without a password "
            f"({out[-300:]}); set ${POSTGRES_ENV} to a URL that connects to a test database")
    if out == "":
        ok, out = _psql("-c", "CREATE DATABASE test")
        if not ok:
            raise BrokerUnavailableError(f"could not create the test database: {out[-300:]}")


def ensure_postgres() -> str:
    if os.environ.get(POSTGRES_ENV):
        return f"using ${POSTGRES_ENV}"
    if port_open(_HOST, _PG_PORT):
        _ensure_test_database()
        return f"PostgreSQL is running on {_HOST}:{_PG_PORT}"
    bindir = _postgres_bin()
    if bindir is None:
        if not can_install():
            raise BrokerUnavailableError(
                "PostgreSQL is not running and not installed: install it (apt-get install "
                f"postgresql), start it with a test database and trust auth, or set ${POSTGRES_ENV}")
        apt_install("postgresql")
        bindir = _postgres_bin()
        if bindir is None:
            raise BrokerUnavailableError("installed postgresql but found no initdb")
    user = "postgres" if os.geteuid() == 0 else None
    data = _state_dir(f"msgkit-postgres-{bindir.parent.name}")
    if not (data / "PG_VERSION").exists():
        _initdb(bindir, data, user)
    done = _pg_start(bindir, data, user)
    if done.returncode != 0:  # e.g. left broken by a killed run: the data is disposable
        _initdb(bindir, data, user)
        done = _pg_start(bindir, data, user)
    if done.returncode != 0 or not wait_port(_HOST, _PG_PORT, 30):
        raise BrokerUnavailableError(f"PostgreSQL did not start: {(done.stdout + done.stderr)[-500:]}; "
                                     f"see {data / 'server.log'}")
    _ensure_test_database()
    return f"started PostgreSQL ({data}) on {_HOST}:{_PG_PORT}"


def _initdb(bindir: Path, data: Path, user: str | None) -> None:
    """A fresh data directory: trust authentication for local connections, as tests expect."""
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    if user is not None:
        shutil.chown(data, user, user)
    done = run(str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
               "-E", "UTF8", user=user)
    if done.returncode != 0:
        raise BrokerUnavailableError(f"initdb failed: {(done.stdout + done.stderr)[-800:]}")


def _pg_start(bindir: Path, data: Path, user: str | None) -> subprocess.CompletedProcess[str]:
    # Test data only: durability settings off for speed; the socket stays in the data folder.
    options = (f"-c listen_addresses={_HOST} -p {_PG_PORT} -c unix_socket_directories={data} "
               "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
    return run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w",
               "-t", "60", "-o", options, "start", user=user, timeout=90)
