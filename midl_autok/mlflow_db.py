"""A new sqlite MLflow database starts as a copy of an empty, migrated one.

MLflow builds a new tracking database by running its ~70 Alembic migrations one by one: about
1 s more for every new store (``midl-autok search --store NEW``, each test's store). The same
empty database is made once per MLflow version, kept in :func:`midl_autok.fileio.cache_dir` as
``mlflow-<version>-empty.db``, and copied; the copy's ``Default`` experiment (id 0, which
MLflow creates with every database) gets the artifact location and times that MLflow would
have given it in this process. A template that is missing, unreadable or not an empty MLflow
database is ignored (MLflow builds the database itself, as before);
``MIDL_AUTOK_MLFLOW_TEMPLATE=0`` turns the copy off.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from midl_autok.fileio import cache_dir

__all__ = ["ENV_SWITCH", "seed_new_database", "template_database"]

ENV_SWITCH = "MIDL_AUTOK_MLFLOW_TEMPLATE"


def _mlflow_version() -> str:
    import mlflow

    return str(mlflow.__version__)


def _is_empty_mlflow_db(path: Path) -> bool:
    """One Alembic version, the ``Default`` experiment alone, no run."""
    try:
        uri = f"{path.absolute().as_uri()}?mode=ro"  # read-only; odd characters escaped
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as con:
            versions = con.execute("SELECT version_num FROM alembic_version").fetchall()
            experiments = con.execute("SELECT experiment_id FROM experiments").fetchall()
            runs = con.execute("SELECT COUNT(*) FROM runs").fetchone()
    except sqlite3.Error:
        return False
    return len(versions) == 1 and experiments == [(0,)] and runs == (0,)


def template_database() -> Path | None:
    """The empty migrated database of this MLflow version, built once (``None``: none can be
    kept, for instance a read-only cache folder)."""
    target = cache_dir() / f"mlflow-{_mlflow_version()}-empty.db"
    if target.is_file() and _is_empty_mlflow_db(target):
        return target
    from mlflow import MlflowClient

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mlflow-template-") as tmp:
            db = Path(tmp) / "mlflow.db"
            MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments(max_results=1)
            if not _is_empty_mlflow_db(db):
                return None
            os.replace(db, target)  # two builders at once: the same content, either wins
    except Exception:  # a cache folder MLflow cannot build in: the store builds its own
        return None
    return target


def seed_new_database(path: Path) -> bool:
    """Copy the template to ``path`` if nothing is there yet; whether it was copied. The caller
    holds the store's init lock (:func:`midl_autok.store.sqlite_init_lock`)."""
    if os.environ.get(ENV_SWITCH, "1") == "0" or path.exists() or not path.parent.is_dir():
        return False
    template = template_database()
    if template is None:
        return False
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        now = int(time.time() * 1000)
        with contextlib.closing(sqlite3.connect(tmp)) as con, con:
            con.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, "
                "last_update_time = ? WHERE experiment_id = 0",
                (str(Path.cwd() / "mlruns" / "0"), now, now),
            )
        try:
            os.link(tmp, path)  # never over a database that appeared meanwhile
        except FileExistsError:
            return False
        except OSError:  # no hard links here
            if path.exists():
                return False
            os.replace(tmp, path)
        return True
    except (OSError, sqlite3.Error):
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
