"""Tampered files and faults (issue 17, point 3): each ends with one line and exit status 2.

Files that midl-autok wrote and someone changed afterwards -- the metadata of an exported
model (``midl_autok.json``), the description and weights of a policy
(``midl_autok_policy.json``, ``policy.pth``), the MLflow database of a store, a study's
``reference_point`` -- and two faults of the machine: ``dashboard --host`` with an address
that is not this machine's, and ``report --png`` with a browser that does not start. The
metadata members are fuzzed with hypothesis (the strategies of ``test_hostile_input``); every
named case below failed with a traceback (KeyError, TypeError, RecursionError,
UnpicklingError, sqlalchemy's DatabaseError, ValueError) before its fix.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from searchkit import fresh_store, runs, tiny_spec
from test_hostile_input import EXAMPLES, mutated, one_clean_line

from midl_autok.cli import main
from midl_autok.dashboard import DashboardError, Dashboards, check_host
from midl_autok.deploy import ModelFileError, export_model, load_model
from midl_autok.errors import UserError
from midl_autok.models import build_model
from midl_autok.results.hypervolume import StudyAttributeError
from midl_autok.store import StoreError, load_study_record, make_client, open_store

# --------------------------------------------------------------------------- helpers


def with_member(path: Path, out: Path, name: str, data: bytes | Callable[[bytes], bytes]) -> Path:
    """A copy of the zip ``path`` whose member ending in ``name`` holds ``data`` (or
    ``data(old)``)."""
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            body = src.read(item)
            if item.filename.rsplit("/", 1)[-1] == name:
                body = data(body) if callable(data) else data
            dst.writestr(item, body)
    return out


def cli(argv: list[str]) -> int:
    """``midl-autok ARGV`` in this process: its exit status."""
    try:
        main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def refused(load: Callable[[Path], Any], path: Path, error: type[UserError], message: str) -> None:
    """``load(path)`` raises ``error`` matching ``message``, in one clean line."""
    with pytest.raises(error, match=message) as info:
        load(path)
    one_clean_line(info.value)


def deep_text(depth: int) -> bytes:
    """JSON text nested ``depth`` deep (too deep for the json module to write)."""
    return b'{"a": [' * depth + b"1" + b"]}" * depth


def nested(depth: int) -> Any:
    doc: Any = 1
    for _ in range(depth):
        doc = {"a": [doc]}
    return doc


# --------------------------------------------------------------------------- exported models


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    model = build_model("mlp", input_shape=(6,), num_classes=3, hidden=[8, 4], gate_rank=2)
    model.set_k({"body.0": 5, "body.1": 3})
    folder = tmp_path_factory.mktemp("model")
    path = export_model(model, folder / "m.pt2", example=torch.randn(2, 6), portable=True)
    with zipfile.ZipFile(path) as archive:
        name = next(n for n in archive.namelist() if n.endswith("midl_autok.json"))
        meta = json.loads(archive.read(name))
    return path, meta


def with_meta(exported: tuple[Path, dict[str, Any]], tmp: Path, meta: Any) -> Path:
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return with_member(exported[0], tmp / "tampered.pt2", "midl_autok.json", text)


def changed(meta: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """``meta`` with ``path`` (keys joined by ``/``) set to ``value`` (DELETE removes it)."""
    copy = json.loads(json.dumps(meta))
    *parents, last = path.split("/")
    node = copy
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return copy


DELETE = object()

MODEL_CASES = [  # (what is changed, value, the line that says so)
    ("arch", DELETE, r"holds no midl-autok architecture"),
    ("config/num_classes", DELETE, r"config lacks 'num_classes'"),
    ("config/hidden", "eight", r"records an invalid model .*'hidden' must be a list"),
    ("config/extra", 1, r"records an invalid model .*unknown option 'extra'"),
    ("config/hidden", nested(400), r"records an invalid model"),
    ("config/hidden", [10**12, 10**12], r"invalid model|do not fit the recorded"),
    ("config/hidden", [2**16, 2**16], r"do not fit the recorded architecture"),
    ("config/input_shape", [2**62], r"invalid model"),
    ("config/input_shape", [4096], r"do not fit the recorded architecture"),
    ("config/num_classes", True, r"'num_classes' must be an integer >= 1"),
    ("k/body.0", -1, r"invalid k .*1 <= k <= 8"),
    ("k/body.0", 9, r"invalid k .*1 <= k <= 8"),
    ("k", {"body.9": 2}, r"invalid k .*no MID-L layer named body.9"),
    ("k", [1, 2], r"'k' must map layer names to integers"),
    ("arch", "nosuch", r"unknown model 'nosuch'"),
    ("arch", ["mlp"], r"'arch' must be a name"),
    ("config/gate_rank", -3, r"records an invalid model"),
    ("config/input_shape", "6", r"'input_shape' must be 1 to 4 integers"),
]


@pytest.mark.parametrize(
    ("where", "value", "message"), MODEL_CASES, ids=[c[0] for c in MODEL_CASES]
)
def test_tampered_model_metadata_is_one_line(
    exported: tuple[Path, dict[str, Any]], tmp_path: Path, where: str, value: Any, message: str
) -> None:
    path = with_meta(exported, tmp_path, changed(exported[1], where, value))
    refused(load_model, path, ModelFileError, message)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (deep_text(100_000), r"nested too deeply"),
        (b"\xff\xfe not utf-8", r"not a model written by midl-autok export"),
        (b"[1, 2]", r"not a model written by midl-autok export"),
    ],
    ids=["recursion", "binary", "not-an-object"],
)
def test_unreadable_model_metadata_is_one_line(
    exported: tuple[Path, dict[str, Any]], tmp_path: Path, text: bytes, message: str
) -> None:
    refused(load_model, with_meta(exported, tmp_path, text), ModelFileError, message)


def test_the_untampered_model_still_loads(exported: tuple[Path, dict[str, Any]]) -> None:
    assert load_model(exported[0]).current_k() == {"body.0": 5, "body.1": 3}


@settings(EXAMPLES, max_examples=80)
@given(doc=st.data())
def test_any_change_to_the_model_metadata_loads_or_is_one_line(
    exported: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory, doc: Any
) -> None:
    meta = doc.draw(mutated(exported[1]))
    path = with_meta(exported, tmp_path_factory.mktemp("fuzz"), meta)
    try:
        model = load_model(path)
    except UserError as exc:
        one_clean_line(exc)
    else:  # what loads is what the metadata says, within the stored weights
        assert sum(p.numel() for p in model.parameters()) > 0


# --------------------------------------------------------------------------- policies


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("stable_baselines3")
    from types import SimpleNamespace

    from stable_baselines3 import PPO

    from midl_autok.rl import save_policy

    model = PPO(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=8,
        batch_size=8,
        seed=0,
        policy_kwargs={"net_arch": [6, 5]},
        device="cpu",
    )
    layers = [SimpleNamespace(name="body.0", width=8)]
    env = SimpleNamespace(  # what save_policy reads of a MIDLScheduleEnv
        observation_names=["a", "b", "c"], layers=layers, config=lambda: {"epochs": 3}
    )
    path = save_policy(model, tmp_path_factory.mktemp("policy") / "p.zip", env=env)
    with zipfile.ZipFile(path) as archive:
        meta = json.loads(archive.read("midl_autok_policy.json"))
    return path, meta


def with_policy_meta(policy_file: tuple[Path, dict[str, Any]], tmp: Path, meta: Any) -> Path:
    text = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return with_member(policy_file[0], tmp / "tampered.zip", "midl_autok_policy.json", text)


POLICY_CASES = [
    ("policy_kwargs", DELETE, r"'policy_kwargs' must be an object"),
    ("observation_space", DELETE, r"field 'observation_space' must be"),
    ("policy_kwargs/net_arch", [2**40], r"'net_arch' must be a list of at most 64 widths"),
    ("policy_kwargs/net_arch", [60000, 60000], r"describes at least \d+ parameters"),
    ("policy_kwargs/net_arch", nested(300), r"'net_arch' must be a list"),
    ("policy_kwargs/net_arch", {"pi": [6], "evil": [1]}, r"'net_arch' must be a list"),
    ("observation_space/low", ["x", 0, 0], r"field 'observation_space' must be"),
    ("action_space/high", [1e9] * 5, r"field 'action_space' must be"),
    ("policy_kwargs/activation_fn", "os.system", r"unsupported activation 'os.system'"),
    ("policy_kwargs/log_std_init", {"a": 1}, r"policy option 'log_std_init' must be a number"),
    ("policy_kwargs/unknown", 1, r"invalid policy description .*unknown"),
    ("layers", [{"name": 3, "width": "8"}], r"'layers' must be a list"),
    ("env", "x", r"'env' must be an object"),
    ("env/epochs", 1.5, r"env 'epochs' must be an integer"),
    ("policy", "builtins.eval", r"invalid policy description .*builtins.eval"),
    ("algo", ["ppo"], r"invalid policy description .*of algo \['ppo'\]"),  # found by fuzzing
    ("policy_kwargs/log_std_init", -(2**70), r"invalid policy description"),  # fuzzing too
    ("version", nested(50), r"unsupported policy version"),
]


@pytest.mark.parametrize(
    ("where", "value", "message"), POLICY_CASES, ids=[c[0] for c in POLICY_CASES]
)
def test_tampered_policy_metadata_is_one_line(
    policy_file: tuple[Path, dict[str, Any]], tmp_path: Path, where: str, value: Any, message: str
) -> None:
    from midl_autok.rl.policy import PolicyFileError, load_policy

    path = with_policy_meta(policy_file, tmp_path, changed(policy_file[1], where, value))
    refused(load_policy, path, PolicyFileError, message)


def test_a_tampered_policy_through_the_real_command(
    policy_file: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    meta = changed(policy_file[1], "policy_kwargs/net_arch", [2**40])
    path = with_policy_meta(policy_file, tmp_path, meta)
    proc = subprocess.run(
        [sys.executable, "-m", "midl_autok", "train", "--controller", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "'net_arch' must be a list" in proc.stderr


def test_deeply_nested_policy_metadata_is_one_line(
    policy_file: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from midl_autok.rl.policy import PolicyFileError, load_policy

    path = with_policy_meta(policy_file, tmp_path, deep_text(100_000))
    with pytest.raises(PolicyFileError, match="nested too deeply"):
        load_policy(path)


class Payload:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch PWNED",))


@pytest.mark.parametrize("kind", ["pickle", "torch-save", "garbage"])
def test_a_tampered_policy_pth_is_one_line_without_the_weights_only_advice(
    policy_file: tuple[Path, dict[str, Any]],
    tmp_path: Path,
    kind: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from midl_autok.rl.policy import PolicyFileError, load_policy

    monkeypatch.chdir(tmp_path)
    if kind == "pickle":
        data = pickle.dumps({"x": Payload()})
    elif kind == "torch-save":
        buffer = io.BytesIO()
        torch.save({"x": Payload()}, buffer)
        data = buffer.getvalue()
    else:
        data = b"\x00" * 64
    path = with_member(policy_file[0], tmp_path / "bad.zip", "policy.pth", data)
    with pytest.raises(PolicyFileError, match=r"policy.pth is not a plain state dict") as info:
        load_policy(path)
    one_clean_line(info.value)
    assert "weights_only" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()


def test_the_untampered_policy_still_loads(policy_file: tuple[Path, dict[str, Any]]) -> None:
    from midl_autok.rl.policy import load_policy

    loaded = load_policy(policy_file[0])
    assert loaded.meta["layers"] == [{"name": "body.0", "width": 8}]


@settings(EXAMPLES, max_examples=80)
@given(doc=st.data())
def test_any_change_to_the_policy_metadata_loads_or_is_one_line(
    policy_file: tuple[Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory, doc: Any
) -> None:
    from midl_autok.rl.policy import load_policy

    meta = doc.draw(mutated(policy_file[1]))
    path = with_policy_meta(policy_file, tmp_path_factory.mktemp("fuzz"), meta)
    try:
        load_policy(path)
    except UserError as exc:
        one_clean_line(exc)


# --------------------------------------------------------------------------- the store


@pytest.mark.parametrize("damage", ["not-a-database", "header"])
def test_a_damaged_mlflow_db_is_one_line(tmp_path: Path, damage: str) -> None:
    store = fresh_store(tmp_path / "store")
    db = store.mlflow_db
    if damage == "not-a-database":
        db.write_bytes(b"garbage, not sqlite " * 300)
    else:
        body = bytearray(db.read_bytes())
        body[:100] = b"\x42" * 100
        db.write_bytes(bytes(body))
    with pytest.raises(StoreError, match=r"the MLflow database .* is damaged") as info:
        make_client(store.tracking_uri)
    one_clean_line(info.value)


def test_a_damaged_mlflow_db_through_the_command(tmp_path: Path, capsys: Any) -> None:
    store = fresh_store(tmp_path / "store")
    store.mlflow_db.write_bytes(b"garbage, not sqlite " * 300)
    code = cli(["search", "synthetic-mlp", "--trials", "1", "--store", str(store.root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and "is damaged" in err[0], err


def test_a_locked_database_is_not_called_damaged() -> None:
    from midl_autok.store import _damaged_database

    locked = sqlite3.OperationalError("database is locked")  # a machine failure: exit 1
    assert not _damaged_database(RuntimeError("wrapped"))
    assert not _damaged_database(locked)
    wrapped = RuntimeError("mlflow")
    wrapped.__cause__ = sqlite3.DatabaseError("file is not a database")
    assert _damaged_database(wrapped)


# --------------------------------------------------------------------------- the reference point


@pytest.mark.parametrize(
    "value", ["garbage", [1.0], [0.0, "x"], [0.0, float("nan")], [True, 1.0], {"a": 1}, []]
)
def test_a_tampered_reference_point_is_one_line_and_starts_no_run(
    tmp_path: Path, value: Any
) -> None:
    from midl_autok.search.opening import open_search

    store = fresh_store(tmp_path / "store")
    spec = tiny_spec(trials=1, epochs=1)
    kw: dict[str, Any] = dict(
        store=store, study="s", device="cpu", backend="local", target=1, threads=1
    )
    with open_search(spec, **kw) as session:
        good = session.attrs["reference_point"]
    assert isinstance(good, list) and len(good) == 2
    storage = store.optuna_storage()
    storage.set_study_user_attr(storage.get_study_id_from_name("s"), "reference_point", value)
    with (
        pytest.raises(StudyAttributeError, match=r"study 's': attribute reference_point") as info,
        open_search(spec, **kw),
    ):
        pass
    one_clean_line(info.value)
    parents, _ = runs(store, "s")
    assert len(parents) == 1  # the first one only: the tampered study started none
    assert all(p.info.status != "RUNNING" for p in parents)
    with pytest.raises(StudyAttributeError):
        load_study_record(open_store(store.root), "s").reference_point  # noqa: B018


# --------------------------------------------------------------------------- dashboard --host


def store_with_a_study(root: Path) -> Any:
    import optuna

    store = fresh_store(root)
    optuna.create_study(storage=store.storage_url, study_name="s")
    return store


@pytest.mark.parametrize(
    "host", ["10.255.255.254", "nosuch.invalid", "999.1.1.1", "::5", "\x1b[2J"]
)
def test_dashboard_host_not_on_this_machine_is_one_line(
    host: str, tmp_path: Path, capsys: Any
) -> None:
    with pytest.raises(DashboardError, match=r"--host .* is not an address of this machine"):
        check_host(host)
    store = store_with_a_study(tmp_path / "store")
    code = cli(
        [
            "dashboard",
            "--store",
            str(store.root),
            "--host",
            host,
            "--optuna-port",
            "0",
            "--mlflow-port",
            "0",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and repr(host) in err[0], err


def test_dashboard_hosts_of_this_machine_pass(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "0.0.0.0", "", "localhost"):
        check_host(host)
    store = store_with_a_study(tmp_path / "s")
    dashboards = Dashboards.for_store(store, host="10.255.255.254")
    with pytest.raises(DashboardError):
        dashboards.start()
    assert all(s.proc is None for s in dashboards.services)  # nothing was started
