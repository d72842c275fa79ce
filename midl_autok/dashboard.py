"""optuna-dashboard and the MLflow UI over one store, as two child processes.

``midl-autok dashboard`` runs :func:`serve`: it starts optuna-dashboard over the store's
Optuna storage and the MLflow UI (``mlflow server``) over its tracking store, both bound to
127.0.0.1 unless told otherwise, waits until both answer HTTP, prints their URLs and
``ready``, and stops both on Ctrl-C or SIGTERM. Python callers use :class:`Dashboards`::

    with Dashboards.for_store(open_store("midl_runs"), optuna_port=0, mlflow_port=0) as d:
        d.wait_ready()
        print(d.urls)

Each child runs in its own session (process group), so stopping it also stops the worker
processes it started. Port 0 picks a free port.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from midl_autok.errors import UserError

if TYPE_CHECKING:
    from midl_autok.store import Store

__all__ = [
    "DEFAULT_MLFLOW_PORT",
    "DEFAULT_OPTUNA_PORT",
    "DashboardError",
    "Dashboards",
    "PortInUseError",
    "Service",
    "serve",
]

DEFAULT_OPTUNA_PORT = 8080
DEFAULT_MLFLOW_PORT = 5000
_WILDCARD = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}


class DashboardError(UserError):
    """A dashboard cannot start (bad address, a server that exits, a missing package)."""


class PortInUseError(DashboardError):
    """The port asked for is taken by another program."""


@dataclass
class Service:
    """One web UI in a child process."""

    name: str
    argv: list[str]
    host: str
    port: int
    health_path: str  # answers 200 once the UI is up
    option: str  # the CLI option that sets the port (for messages)
    env: dict[str, str] = field(default_factory=dict)
    external: bool = False  # a server someone else runs: shown, not started
    url_override: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        if self.url_override:
            return self.url_override
        host = _WILDCARD.get(self.host, self.host)
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    def log_tail(self, lines: int = 3) -> str:
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])


def check_host(host: str) -> None:
    """Raise :class:`DashboardError` naming ``host`` unless the servers can listen on it: a
    name that does not resolve, or an address that is not one of this machine's."""
    if host in _WILDCARD:
        return
    shown = repr(host) if len(host) <= 80 else repr(host[:77] + "...")
    fix = (
        "use an address of this machine with --host: 127.0.0.1 (this machine only, the "
        "default), 0.0.0.0 (all its addresses) or one of its own"
    )
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
    except (OSError, UnicodeError, ValueError) as exc:
        lines = str(exc).splitlines()
        reason = getattr(exc, "strerror", None) or (lines[0] if lines else "")
        raise DashboardError(
            f"--host {shown} is not an address of this machine ({reason or type(exc).__name__}); "
            f"{fix}"
        ) from None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the OS picks it)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int, what: str, option: str) -> None:
    """Raise :class:`PortInUseError` (or :class:`DashboardError`) unless ``host:port`` is free.

    ``SO_REUSEADDR`` is set as the servers set it, so a port left in TIME_WAIT by a previous
    run counts as free while one with a listener does not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on {host} is already in use, so {what} cannot start; stop "
                    f"the program using it or choose another port with {option} P "
                    "(0 picks a free one)"
                ) from None
            if exc.errno == errno.EACCES:
                raise DashboardError(
                    f"port {port} on {host} needs privileges to bind ({what}); choose a port "
                    f"above 1023 with {option} P"
                ) from None
            raise DashboardError(
                f"cannot listen on {host}:{port} for {what}: {exc.strerror}; use an address "
                "of this machine with --host (default 127.0.0.1)"
            ) from None


# Storage URLs reach the children by environment, not argv: a password in a database URL
# would otherwise show in `ps`.
_STORAGE_ENV = "MIDL_AUTOK_DASHBOARD_STORAGE"


def _optuna_service(storage_url: str, host: str, port: int) -> Service:
    argv = [sys.executable, "-m", "midl_autok.dashboard", "--host", host, "--port", str(port)]
    env = {_STORAGE_ENV: storage_url}
    return Service("optuna-dashboard", argv, host, port, "/api/studies", "--optuna-port", env=env)


def _mlflow_service(tracking_uri: str, artifacts: str | None, host: str, port: int) -> Service:
    if tracking_uri.startswith(("http://", "https://")):
        # A tracking server that already runs: its own UI is the MLflow dashboard.
        url = tracking_uri.rstrip("/") + "/"
        return Service(
            "MLflow UI", [], host, port, "/health", "--mlflow-port", external=True, url_override=url
        )
    argv = [sys.executable, "-m", "mlflow", "server"]
    if artifacts:
        argv += ["--artifacts-destination", artifacts]
    argv += ["--host", host, "--port", str(port), "--workers", "1"]
    env = {
        "MLFLOW_BACKEND_STORE_URI": tracking_uri,  # `mlflow server --backend-store-uri`
        # The UI only reads; MLflow's background job runner (another process) is not needed.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    return Service("MLflow UI", argv, host, port, "/health", "--mlflow-port", env=env)


class Dashboards:
    """optuna-dashboard and the MLflow UI as child processes; a context manager."""

    def __init__(self, services: Sequence[Service]) -> None:
        self.services = list(services)
        self._logs: Path | None = None
        self._failed = False  # keep the logs of a failed start for the user
        self._stopped = False

    @classmethod
    def for_store(
        cls,
        store: Store,
        *,
        host: str = "127.0.0.1",
        optuna_port: int = DEFAULT_OPTUNA_PORT,
        mlflow_port: int = DEFAULT_MLFLOW_PORT,
    ) -> Dashboards:
        """Both UIs over ``store`` (see :func:`midl_autok.store.open_store`)."""
        import importlib.util

        store.require_studies()
        if importlib.util.find_spec("optuna_dashboard") is None:
            raise DashboardError(
                "optuna-dashboard is not installed; pip install 'midl-autok[dashboard]'"
            )
        artifacts = str(store.root / "mlartifacts") if store.embedded_mlflow else None
        return cls(
            [
                _optuna_service(store.storage_url, host, optuna_port),
                _mlflow_service(store.tracking_uri, artifacts, host, mlflow_port),
            ]
        )

    @property
    def urls(self) -> dict[str, str]:
        return {s.name: s.url for s in self.services}

    def start(self) -> None:
        """Check the ports, then start every service (port 0: a free port is picked)."""
        local = [s for s in self.services if not s.external]
        for s in local:
            check_host(s.host)
            if s.port == 0:
                s.port = free_port(_WILDCARD.get(s.host, s.host))
        ports = [s.port for s in local]
        if len(set(ports)) != len(ports):
            raise DashboardError(
                f"optuna-dashboard and the MLflow UI need different ports, but both got "
                f"{ports[0]}; change --optuna-port or --mlflow-port"
            )
        for s in local:
            check_port(s.host, s.port, s.name, s.option)
            s.argv = _with_port(s.argv, s.port)
        self._logs = Path(tempfile.mkdtemp(prefix="midl-autok-dashboard-"))
        try:
            for s in local:
                s.log = self._logs / f"{s.name.replace(' ', '-').lower()}.log"
                with open(s.log, "wb") as log:
                    s.proc = subprocess.Popen(
                        s.argv,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env={**os.environ, **s.env},
                        start_new_session=True,  # its own process group: stopped as a whole
                    )
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until every started service answers HTTP 200 on its health path."""
        deadline = time.monotonic() + timeout
        pending = [s for s in self.services if not s.external]
        while pending:
            for s in list(pending):
                self._check_alive(s)
                if _answers(f"http://{_WILDCARD.get(s.host, s.host)}:{s.port}{s.health_path}"):
                    pending.remove(s)
            if pending and time.monotonic() > deadline:
                names = " and ".join(s.name for s in pending)
                raise DashboardError(
                    f"{names} did not answer within {timeout:.0f} s; last log lines: "
                    + "; ".join(f"{s.name}: {s.log_tail() or '(empty)'}" for s in pending)
                )
            if pending:
                time.sleep(0.2)

    def _check_alive(self, s: Service) -> None:
        if s.proc is not None and s.proc.poll() is not None:
            self._failed = True
            raise DashboardError(
                f"{s.name} exited with status {s.proc.returncode}: {s.log_tail() or '(no output)'}"
                + (f" (full log: {s.log})" if s.log else "")
            )

    def poll(self) -> Service | None:
        """The first started service whose process has exited, if any."""
        for s in self.services:
            if s.proc is not None and s.proc.poll() is not None:
                return s
        return None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every service's process group, wait, then SIGKILL what is left."""
        if self._stopped:
            return
        self._stopped = True
        procs = [s.proc for s in self.services if s.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # Workers left behind by the server (same process group) go too.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if self._logs is not None and not self._failed:
            shutil.rmtree(self._logs, ignore_errors=True)
            self._logs = None

    def __enter__(self) -> Dashboards:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _with_port(argv: list[str], port: int) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--port":
            out[i + 1] = str(port)
    return out


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


class _Stop(Exception):
    """SIGTERM arrived."""


def serve(
    dashboards: Dashboards,
    *,
    timeout: float = 120.0,
    echo: Callable[[str], None] = print,
) -> int:
    """Start, print the URLs and ``ready``, run until Ctrl-C/SIGTERM or a server exits.

    Returns 0 after a requested stop; raises :class:`DashboardError` when a server fails.
    """

    def on_term(signum: int, frame: Any) -> None:
        raise _Stop

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        dashboards.start()
        for s in dashboards.services:
            note = " (external server)" if s.external else ""
            echo(f"{s.name + ':':<18} {s.url}{note}")
        dashboards.wait_ready(timeout)
        echo("ready (Ctrl-C stops both)")
        while True:
            failed = dashboards.poll()
            if failed is not None:
                dashboards._check_alive(failed)
            time.sleep(0.5)
    except (KeyboardInterrupt, _Stop):
        echo("stopping...")
        dashboards.stop()
        echo("stopped")
        return 0
    except BaseException:
        dashboards._failed = True
        raise
    finally:
        dashboards.stop()
        signal.signal(signal.SIGTERM, previous)


# -- the optuna-dashboard child process ----------------------------------------------------


def _run_optuna_dashboard(argv: Sequence[str] | None = None) -> None:
    """``python -m midl_autok.dashboard --host H --port P`` (storage URL in the environment).

    optuna-dashboard's public :func:`optuna_dashboard.wsgi` app on a threaded wsgiref server
    (optuna-dashboard's own choice when gunicorn is absent), without per-request logging.
    """
    import argparse
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    import optuna_dashboard

    parser = argparse.ArgumentParser(prog="python -m midl_autok.dashboard")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_OPTUNA_PORT)
    args = parser.parse_args(argv)

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        request_queue_size = 64
        address_family = socket.AF_INET6 if ":" in args.host else socket.AF_INET

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *log_args: Any) -> None:
            pass

    storage = os.environ.get(_STORAGE_ENV)
    if not storage:
        parser.error(f"set {_STORAGE_ENV} to the Optuna storage URL")
    from midl_autok.store import open_store

    # The store's storage object: sqlite waits for a search's write lock instead of failing.
    app = optuna_dashboard.wsgi(open_store(storage=storage).optuna_storage())
    httpd = make_server(args.host, args.port, app, server_class=Server, handler_class=QuietHandler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    print(f"optuna-dashboard listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()


if __name__ == "__main__":
    _run_optuna_dashboard()
