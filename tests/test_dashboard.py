"""`midl-autok dashboard`: optuna-dashboard and the MLflow UI over a store, as a user runs it.

The command runs in a subprocess over a real store (sqlite Optuna study + MLflow experiment);
the test reads the URLs it prints, asks both servers (and a headless Chromium) for the study
and the experiment, checks every listening socket of the process tree is on 127.0.0.1, and
stops it the way a user does.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from browser import Browser
from results.test_report import search  # tests/results/test_report.py

EXE = [sys.executable, "-m", "midl_autok", "dashboard"]
STUDY = "tiny-search"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store written by a real `midl-autok search` (3 trials)."""
    root = tmp_path_factory.mktemp("store")
    search(root, STUDY, "tpe")
    return root


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*EXE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def read_until_ready(proc: subprocess.Popen[str], timeout: float = 120) -> dict[str, str]:
    """The URLs the command prints before ``ready``."""
    assert proc.stdout is not None
    urls: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"dashboard exited early: {proc.wait()} {proc.stderr.read()}")  # type: ignore[union-attr]
        if line.startswith("ready"):
            return urls
        match = re.match(r"(.+?):\s+(http://\S+)", line)
        if match:
            urls[match[1]] = match[2]
    raise AssertionError("dashboard not ready in time")


def get_json(url: str, body: dict[str, Any] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


# -- listening sockets of a process tree, from /proc ---------------------------------------


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in out:
                out.add(child)
                todo.append(child)
    return out


def _address(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1]), int(port, 16)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words), int(port, 16)


def listening(pids: set[int]) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A = LISTEN
                found.add(_address(fields[1]))
    return found


def stop(proc: subprocess.Popen[str], sig: int) -> tuple[int, str]:
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


# -- tests ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_serves_both_uis_on_loopback_and_stops_on_ctrl_c(store: Path, tmp_path: Path) -> None:
    proc = start("--store", str(store), "--optuna-port", "0", "--mlflow-port", "0")
    try:
        urls = read_until_ready(proc)
        optuna_url, mlflow_url = urls["optuna-dashboard"], urls["MLflow UI"]
        assert optuna_url.startswith("http://127.0.0.1:")
        assert mlflow_url.startswith("http://127.0.0.1:")

        # optuna-dashboard lists the study (API, and the page in a real browser)
        studies = get_json(optuna_url + "api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == [STUDY]
        # the MLflow UI lists the experiment (REST API, and its page)
        found = get_json(mlflow_url + "api/2.0/mlflow/experiments/search", {"max_results": 100})[
            "experiments"
        ]
        assert STUDY in [e["name"] for e in found]
        with Browser() as browser:
            browser.open(optuna_url)
            browser.wait_for("document.body.innerText.includes('tiny-search')", timeout=60)
            assert browser.errors == []
            browser.screenshot(tmp_path / "optuna-dashboard.png")
            browser.open(mlflow_url)
            browser.wait_for("document.body.innerText.includes('tiny-search')", timeout=90)
            # The MLflow UI probes endpoints this server does not have (404 log entries,
            # e.g. users/current of the basic-auth app); uncaught exceptions would be ours.
            assert [e for e in browser.errors if e.startswith("exception")] == []

        # every listening socket of the command and its servers is on 127.0.0.1
        sockets = listening(descendants(proc.pid) | {proc.pid})
        ports = {
            int(optuna_url.rsplit(":", 1)[1].strip("/")),
            int(mlflow_url.rsplit(":", 1)[1].strip("/")),
        }
        assert {port for _, port in sockets} == ports
        assert {host for host, _ in sockets} == {"127.0.0.1"}
        children = descendants(proc.pid)
    finally:
        code, out = stop(proc, signal.SIGINT)  # what Ctrl-C sends
    assert code == 0, out
    assert "stopped" in out
    time.sleep(0.5)
    assert not any(Path(f"/proc/{pid}").exists() and _alive(pid) for pid in children)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_stops_cleanly_with_external_mlflow(store: Path) -> None:
    # An http(s) MLFLOW_TRACKING_URI is a server someone else runs: shown, not started.
    env = {"MLFLOW_TRACKING_URI": "http://mlflow.example.invalid:5000"}
    proc = start("--store", str(store), "--optuna-port", "0", env=env)
    try:
        urls = read_until_ready(proc, timeout=60)
        assert urls["MLflow UI"] == "http://mlflow.example.invalid:5000/"
        children = descendants(proc.pid)
        assert len(children) == 1  # optuna-dashboard only
    finally:
        code, out = stop(proc, signal.SIGTERM)
    assert code == 0, out
    time.sleep(0.5)
    assert not any(_alive(pid) for pid in children)


@pytest.mark.parametrize("option", ["--optuna-port", "--mlflow-port"])
def test_port_in_use_is_one_clear_line(store: Path, option: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        other = "--mlflow-port" if option == "--optuna-port" else "--optuna-port"
        proc = subprocess.run(
            [*EXE, "--store", str(store), option, str(port), other, "0"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert re.search(rf"port {port} on 127.0.0.1 is already in use.*{option}", lines[0]), lines[0]


def test_missing_store_is_a_user_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*EXE, "--store", str(tmp_path / "none")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "no search results in" in proc.stderr
    assert "Traceback" not in proc.stderr
