"""The store: where searches keep their Optuna studies, MLflow runs, Ray results and reports.

One folder holds everything by default (``./midl_runs``; ``--store DIR`` or the
``MIDL_AUTOK_HOME`` environment variable choose another)::

    midl_runs/
      optuna.db        Optuna RDB storage (sqlite): studies, trials, user attrs
      mlflow.db        MLflow tracking store (sqlite): parent and child runs, metrics
      mlartifacts/     MLflow artifacts (schedule.json per trial, pareto.* per search)
      ray/             Ray Tune results
      reports/         Pareto files and HTML reports, one folder per study
      .init.lock       held while a process creates the databases' tables

Every part can point at a server instead: ``--storage URL`` (an SQLAlchemy URL such as
``postgresql://user@host/db``) for Optuna, ``MLFLOW_TRACKING_URI`` for MLflow. This module is
the one place that turns those into URLs (:func:`open_store`); it imports neither Optuna nor
MLflow until a storage or client is asked for.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midl_autok.errors import UserError
from midl_autok.interrupts import deferring

if TYPE_CHECKING:
    import optuna
    from mlflow import MlflowClient

__all__ = [
    "DEFAULT_STORE",
    "ENV_HOME",
    "SQLITE_TIMEOUT_S",
    "Store",
    "StoreError",
    "delete_study",
    "make_client",
    "open_store",
    "redact_url",
    "sqlite_init_lock",
    "store_root",
]

DEFAULT_STORE = "midl_runs"
ENV_HOME = "MIDL_AUTOK_HOME"
ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
#: Seconds a writer waits for a locked sqlite database before failing (several processes,
#: a dashboard reading while a search writes, ...).
SQLITE_TIMEOUT_S = 60.0

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.\-]*://")
# One Optuna storage object per URL and process (each owns an SQLAlchemy engine).
_STORAGES: dict[str, Any] = {}


class StoreError(UserError):
    """The store cannot be opened, read or written."""


def store_root(store: str | os.PathLike[str] | None = None) -> Path:
    """The store folder: ``store`` if given, else ``$MIDL_AUTOK_HOME``, else ``./midl_runs``."""
    if store is not None and str(store).strip():
        return Path(store).expanduser().absolute()
    env = os.environ.get(ENV_HOME, "").strip()
    if env:
        return Path(env).expanduser().absolute()
    return Path(DEFAULT_STORE).absolute()


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


_INIT_LOCK = ".init.lock"


@contextlib.contextmanager
def sqlite_init_lock(url: str) -> Iterator[None]:
    """Hold an exclusive lock while a client opens the sqlite database at ``url``.

    Optuna and MLflow create their tables (and stamp the Alembic version) the first time a
    client opens an empty database; two searches started at once on a new store would both
    do it and one would fail (``UNIQUE constraint failed: alembic_version.version_num``).
    The lock (``flock`` on ``.init.lock`` next to the database) makes the second wait until
    the first has built the tables. Other URLs, a folder that cannot be written (read-only
    commands) and systems without ``fcntl`` go without the lock.
    """
    path = _sqlite_path(url)
    try:
        import fcntl
    except ImportError:  # Windows
        fcntl = None  # type: ignore[assignment]
    if path is None or fcntl is None or not path.parent.is_dir():
        yield
        return
    try:
        fd = os.open(path.parent / _INIT_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for other URLs and in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    rest = url[len("sqlite:///") :].split("?", 1)[0]
    if not rest or rest == ":memory:":
        return None
    return Path(rest)


def make_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``tracking_uri`` (MLflow's own telemetry off unless the user
    opted in through ``MLFLOW_DISABLE_TELEMETRY``); a new sqlite database starts as a copy of
    an empty migrated one (:mod:`midl_autok.mlflow_db`)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow import MlflowClient

    from midl_autok.mlflow_db import seed_new_database

    path = _sqlite_path(tracking_uri)
    try:
        with sqlite_init_lock(tracking_uri):  # the client builds the tables of a new database
            if path is not None:
                seed_new_database(path)
            return MlflowClient(tracking_uri=tracking_uri)
    except Exception as exc:
        if not _damaged_database(exc):
            raise
        raise StoreError(
            f"the MLflow database {redact_url(tracking_uri)} is damaged ({_first_line(exc)}); "
            "move it away (the trials themselves are in the Optuna database) or restore it "
            "from a backup"
        ) from None


def _damaged_database(exc: BaseException) -> bool:
    """Whether sqlite refused a file as a database ("file is not a database", "database disk
    image is malformed") anywhere in ``exc``'s chain; a locked or read-only database
    (``OperationalError``) is a failure of the machine and stays what it was."""
    import sqlite3

    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        item = todo.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, sqlite3.DatabaseError) and not isinstance(
            item, sqlite3.OperationalError
        ):
            return True
        orig = getattr(item, "orig", None)  # SQLAlchemy's wrapper of the DB-API error
        todo += [
            item.__cause__,
            item.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]
    return False


def _check_url(url: str, what: str) -> str:
    url = url.strip()
    if not _URL.match(url):
        raise StoreError(
            f"{what} must be a URL such as sqlite:///path/optuna.db or "
            f"postgresql://user@host/db, but got {url!r}"
        )
    return url


class _Under:
    """A read-only ``Store`` attribute: the path ``name`` under the store's root."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __get__(self, store: Store | None, owner: type | None = None) -> Path:
        if store is None:
            raise AttributeError(f"a path under a store's root ({self.name!r}), not a class one")
        return store.root / self.name


@dataclass(frozen=True)
class Store:
    """Locations of one store. Build it with :func:`open_store`."""

    root: Path
    storage_url: str  # Optuna RDB storage
    tracking_uri: str  # MLflow tracking
    artifact_location: str | None  # MLflow artifact root for new experiments (None: server's)
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    # -- layout: what lives under root -----------------------------------------------------

    optuna_db = _Under("optuna.db")  # the embedded Optuna storage (unless an RDB URL is given)
    mlflow_db = _Under("mlflow.db")  # the embedded MLflow tracking store
    ray_dir = _Under("ray")  # Ray Tune's trial folders
    reports_dir = _Under("reports")  # Pareto files and pages (a folder per study), plotly.js

    @property
    def embedded_optuna(self) -> bool:
        """True when Optuna uses the store's own ``optuna.db``."""
        return self.storage_url == _sqlite_url(self.optuna_db)

    @property
    def embedded_mlflow(self) -> bool:
        """True when MLflow uses the store's own ``mlflow.db``."""
        return self.tracking_uri == _sqlite_url(self.mlflow_db)

    def report_dir(self, study: str) -> Path:
        """``reports/<study>/`` (the study name made safe as a folder name)."""
        name = re.sub(r"[^\w.\-]+", "_", study).strip(".") or "study"
        return self.reports_dir / name

    # -- checks ----------------------------------------------------------------------------

    def ensure_writable(self) -> None:
        """Create the store folders and prove they can be written; a clear error if not."""
        hint = f"choose another folder with --store DIR or {ENV_HOME}"
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"the store {self.root} exists but is not a folder; {hint}")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if self.embedded_mlflow:
                (self.root / "mlartifacts").mkdir(exist_ok=True)
            self.reports_dir.mkdir(exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=self.root)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise StoreError(f"cannot write to the store {self.root}: {reason}; {hint}") from None
        for db, used in ((self.optuna_db, self.embedded_optuna), (self.mlflow_db, True)):
            if used and db.exists() and not os.access(db, os.W_OK):
                raise StoreError(f"cannot write to {db} (permission denied); {hint}")

    def require_studies(self) -> None:
        """For read-only commands: the Optuna database must already exist."""
        if self.embedded_optuna and not self.optuna_db.is_file():
            raise StoreError(
                f"no search results in {self.root} (no optuna.db); run `midl-autok search "
                f"--store {self.root}` first, or give the store with --store DIR"
            )

    # -- clients ---------------------------------------------------------------------------

    def optuna_storage(self) -> optuna.storages.BaseStorage:
        """The Optuna RDB storage (one per URL and process; sqlite waits for locks)."""
        storage = _STORAGES.get(self.storage_url)
        if storage is None:
            kwargs: dict[str, Any] = {}
            if self.storage_url.startswith("sqlite"):
                kwargs["connect_args"] = {"timeout": SQLITE_TIMEOUT_S}
            try:
                with sqlite_init_lock(self.storage_url):  # two new searches at once
                    storage = _counting_storage_class()(self.storage_url, engine_kwargs=kwargs)
            except ImportError as exc:
                raise StoreError(
                    f"the Optuna storage {redact_url(self.storage_url)} needs a database driver "
                    f"that is not installed ({exc}); e.g. pip install 'midl-autok[postgres]'"
                ) from None
            except Exception as exc:
                raise StoreError(
                    f"cannot open the Optuna storage {redact_url(self.storage_url)}: "
                    f"{_first_line(exc)}"
                ) from None
            _STORAGES[self.storage_url] = storage
        return storage

    def mlflow_client(self) -> MlflowClient:
        client = self._cache.get("mlflow")
        if client is None:
            client = make_client(self.tracking_uri)
            self._cache["mlflow"] = client
        return client

    # -- description -----------------------------------------------------------------------

    def describe(self) -> dict[str, str]:
        return {
            "store": str(self.root),
            "optuna_storage": redact_url(self.storage_url),
            "mlflow_tracking_uri": redact_url(self.tracking_uri),
        }

    def dashboard_commands(self) -> list[str]:
        """Shell commands that open the dashboards over this store."""
        lines = [f"midl-autok dashboard --store {_quote(str(self.root))}"]
        lines.append(f"optuna-dashboard {_quote(redact_url(self.storage_url))}")
        mlflow_ui = f"mlflow ui --backend-store-uri {_quote(redact_url(self.tracking_uri))}"
        if self.embedded_mlflow:
            mlflow_ui += f" --default-artifact-root {_quote(str(self.root / 'mlartifacts'))}"
        lines.append(mlflow_ui)
        return lines


def open_store(
    store: str | os.PathLike[str] | None = None,
    *,
    storage: str | None = None,
    tracking_uri: str | None = None,
) -> Store:
    """Resolve the store: folder, Optuna storage URL and MLflow tracking URI.

    ``storage`` (``--storage``) replaces the store's ``optuna.db``; ``tracking_uri`` (or the
    ``MLFLOW_TRACKING_URI`` environment variable) replaces its ``mlflow.db``. Nothing is
    created here: call :meth:`Store.ensure_writable` before writing.
    """
    root = store_root(store)
    storage_url = _check_url(storage, "--storage") if storage else _sqlite_url(root / "optuna.db")
    uri = tracking_uri or os.environ.get(ENV_TRACKING_URI, "").strip() or None
    if uri:
        if "://" not in uri and not uri.startswith(("databricks", "file:")):
            uri = Path(uri).expanduser().absolute().as_uri()  # a bare folder: file store
        artifacts = None
    else:
        uri = _sqlite_url(root / "mlflow.db")
        artifacts = (root / "mlartifacts").as_uri()
    return Store(root=root, storage_url=storage_url, tracking_uri=uri, artifact_location=artifacts)


def _counting_storage_class() -> type[optuna.storages.RDBStorage]:
    """:class:`optuna.storages.RDBStorage` whose ``get_n_trials`` is one ``COUNT`` query.

    Optuna's own ``get_n_trials`` loads every trial of the study with its params and user
    attrs to count them. A search counts its trials twice per trial (the sampler seed, the
    target), so a 1,000-trial search spent most of its time there: 0.2 s of CPU per trial at
    trial 50, 0.7 s at trial 300, 2.4 s at trial 800 (experiments/long_run.py). Built on
    first use (no Optuna import before), kept as this module's ``CountingRDBStorage`` so that
    it pickles like its base class (Ray workers).
    """
    cls = globals().get("_COUNTING")
    if cls is not None:
        return cls
    import optuna
    from optuna.trial import TrialState

    class CountingRDBStorage(optuna.storages.RDBStorage):
        def get_n_trials(
            self, study_id: int, state: tuple[TrialState, ...] | TrialState | None = None
        ) -> int:
            try:
                from optuna.storages._rdb import models
                from optuna.storages._rdb.storage import _create_scoped_session
                from sqlalchemy import func
            except ImportError:  # another Optuna layout: its own (slower) count
                return super().get_n_trials(study_id, state)
            states = (state,) if isinstance(state, TrialState) else state
            with _create_scoped_session(self.scoped_session) as session:
                models.StudyModel.find_or_raise_by_id(study_id, session)
                query = session.query(func.count(models.TrialModel.trial_id)).filter(
                    models.TrialModel.study_id == study_id
                )
                if states is not None:
                    query = query.filter(models.TrialModel.state.in_(tuple(states)))
                return int(query.scalar() or 0)

    # every storage call holds a Ctrl-C / SIGTERM until it returns (midl_autok.interrupts):
    # an interrupt inside one could leave a transaction holding sqlite's write lock. The
    # private ones too: Optuna's _CachedStorage calls _get_trials, _create_new_trial, ...
    for attr in dir(CountingRDBStorage):
        fn = inspect.getattr_static(CountingRDBStorage, attr)
        if not attr.startswith("__") and inspect.isfunction(fn):
            setattr(CountingRDBStorage, attr, deferring(fn))
    CountingRDBStorage.__module__ = __name__
    CountingRDBStorage.__qualname__ = "CountingRDBStorage"
    globals()["_COUNTING"] = CountingRDBStorage
    return CountingRDBStorage


def delete_study(store: Store, name: str) -> list[str]:
    """Delete study ``name`` from ``store``: the Optuna study (its trials), the runs of its
    MLflow experiment and the experiment (MLflow's soft delete, under the name ``<study>
    (deleted <id>)`` so that a new search of that name starts a new experiment; ``mlflow gc``
    purges them), the runs' artifacts in the store, its
    ``reports/<study>/`` folder and its RL policy. Returns what was deleted, as lines. An
    unknown name raises :class:`StoreError` with a "did you mean"."""
    import shutil
    from urllib.parse import urlparse

    import optuna

    store.require_studies()
    names = sorted(optuna.study.get_all_study_names(store.optuna_storage()))
    if name not in names:
        from midl_autok.errors import unknown_name

        raise unknown_name(f"study in {store.root}", name, names, error=StoreError)
    storage = store.optuna_storage()
    study_id = storage.get_study_id_from_name(name)
    attrs = storage.get_study_user_attrs(study_id)
    n_trials = storage.get_n_trials(study_id)
    done = [f"Optuna study {name} ({n_trials} trials)"]
    client = store.mlflow_client()
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        run_ids = [
            r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=50_000)
        ]
        for run_id in run_ids:
            uri = client.get_run(run_id).info.artifact_uri
            client.delete_run(run_id)
            folder = Path(urlparse(uri).path) if uri.startswith("file:") else Path(uri)
            if folder.is_dir() and store.root in folder.parents:  # never outside the store
                shutil.rmtree(folder.parent, ignore_errors=True)  # <run id>/artifacts
        # MLflow restores an experiment's runs with it: free the name for a new search
        client.rename_experiment(exp.experiment_id, f"{name} (deleted {exp.experiment_id})")
        client.delete_experiment(exp.experiment_id)
        done.append(f"MLflow experiment {name} ({len(run_ids)} runs)")
    storage.delete_study(study_id)
    folder = store.report_dir(name)
    others = {store.report_dir(n) for n in names if n != name}
    if folder.is_dir() and folder not in others:  # another study's name may map to it too
        shutil.rmtree(folder)
        done.append(f"reports {folder}")
    policy = attrs.get("rl_policy")
    path = policy.get("path") if isinstance(policy, dict) else None
    if isinstance(path, str):
        file = (store.root / path).resolve()
        if file.is_file() and store.root.resolve() in file.parents:
            file.unlink()
            done.append(f"policy {file}")
    return done


#: Names this module had before the read side moved to :mod:`midl_autok.results` (the
#: study record, picks, hypervolume); still importable from here.
_MOVED = {
    "STUDY_FORMAT": "midl_autok.results.record",
    "ATTR_SCHEDULE": "midl_autok.results.record",
    "ATTR_RUN_ID": "midl_autok.results.record",
    "ATTR_FAIL_REASON": "midl_autok.results.record",
    "POINT_KEYS": "midl_autok.results.record",
    "StudyRecord": "midl_autok.results.record",
    "list_studies": "midl_autok.results.record",
    "load_study_record": "midl_autok.results.record",
    "PICKS": "midl_autok.results.picks",
    "hypervolume": "midl_autok.results.hypervolume",
}


def __getattr__(name: str) -> Any:  # PEP 562: pickle finds CountingRDBStorage lazily
    if name == "CountingRDBStorage":
        return _counting_storage_class()
    module = _MOVED.get(name)
    if module is not None:  # by name, so that the read side may import this module
        import importlib

        return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def redact_url(url: str) -> str:
    """Hide a password in ``scheme://user:password@host``."""
    return re.sub(r"(://[^/:@]+):[^/@]*@", r"\1:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)
