"""A search session: one study, one MLflow parent run, and what a search does with them.

Built by :func:`~midl_autok.search.opening.open_search`. It implements
:class:`~midl_autok.agents.host.SearchHost`, the face an external agent sees.

* Sampler agents: the backend calls :meth:`SearchSession.ask`, the agent proposes a
  schedule on the trial, :func:`~midl_autok.search.evaluate.evaluate_trial` trains it (here
  or in a worker, from :meth:`SearchSession.request`), and :meth:`SearchSession.tell` records
  the outcome (:func:`~midl_autok.search.recording.tell_outcome`).
* External agents (RL): :meth:`SearchSession.record` takes a schedule they evaluated
  themselves and records it the same way (:func:`~midl_autok.search.recording.record_external`).
* After each completed trial the parent run gets ``front_size``, ``hypervolume`` and
  ``hypervolume_normalized`` (step = trial number).
* :meth:`SearchSession.finish` writes ``pareto.{json,csv,html}`` and ``report.html`` (store
  ``reports/<study>/`` and the parent run) and ends the parent run; used as a context manager
  the session ends the parent run KILLED/FAILED when the search is interrupted or crashes,
  after failing its own RUNNING trials (:func:`~midl_autok.search.recovery.fail_own_running`).

Trial user attrs: ``schedule`` (the realized KSchedule as JSON, with provenance),
``mlflow_run_id``, every final metric by name, ``fail_reason`` for failed trials, and
``host``/``pid`` of the process that ran it (to recognize trials orphaned by a killed process).
Study user attrs: see :mod:`midl_autok.results.record`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from midl_autok import __version__
from midl_autok.agents import Agent, SamplerAgent, derive_seed
from midl_autok.gating import Gating, snap_schedule
from midl_autok.results.confirmed import is_confirmation
from midl_autok.results.feasibility import meets_constraints
from midl_autok.results.hypervolume import hypervolume, normalized_hypervolume
from midl_autok.results.record import StudyRecord, load_study_record
from midl_autok.search import recording, recovery
from midl_autok.search.outcome import TrialOutcome, TrialRequest
from midl_autok.search.reserve import ATTR_RESERVED_BY, reserve_number
from midl_autok.search.summary import SearchSummary
from midl_autok.search_spaces.ranks import rank_params
from midl_autok.tracking import FAILED, FINISHED, KILLED, Tracker, git_sha

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from midl_autok.schedule import KSchedule, LayerSpec
    from midl_autok.search_spaces import SearchSpace
    from midl_autok.spec import ExperimentSpec
    from midl_autok.store import Store

__all__ = ["SearchSession", "SearchSummary"]


class SearchSession:
    """One study + one MLflow parent run. Build it with :func:`open_search`."""

    def __init__(
        self,
        *,
        spec: ExperimentSpec,
        store: Store,
        study: optuna.Study,
        storage: optuna.storages.BaseStorage,
        agent: Agent,
        space: SearchSpace,
        tracker: Tracker,
        parent_run_id: str,
        attrs: dict[str, Any],
        device: str,
        threads: int | None = None,
    ) -> None:
        self.spec = spec
        self.store = store
        self.study = study
        self.storage = storage
        self.study_id = self.storage.get_study_id_from_name(study.study_name)
        self.agent = agent
        self.space = space
        self.tracker = tracker
        self.parent_run_id = parent_run_id
        self.attrs = attrs
        self.device = device
        self.threads = threads
        self.block_gatings: dict[str, Gating] = {}  # set by open_search: k snapped to groups
        self.objectives: list[str] = list(attrs["objectives"])
        self.directions: list[str] = [o.direction for o in spec.objectives]
        self.reference: list[float] | None = attrs.get("reference_point")
        self.flops_budget: float | None = attrs.get("flops_budget")
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.started = time.perf_counter()
        self.opened = datetime.datetime.now()  # Optuna's datetime_start is naive local time
        self.new_trials = 0
        self._seed_uses: Counter[int] = Counter()  # reserved number -> asks seeded from it
        self.failed = 0
        self.pruned = 0
        self.train_s = 0.0
        self.trial_s = 0.0  # wall time from ask (or record) to the end of tell, summed
        self._asked: dict[int, float] = {}
        self.hypervolume: float | None = None
        self.front_size = 0
        self._points: list[list[float]] = []
        self._parent_open = True
        self._load_points()

    # -- facts ---------------------------------------------------------------------------

    @property
    def study_name(self) -> str:
        return str(self.study.study_name)

    @property
    def layers(self) -> tuple[LayerSpec, ...]:
        return self.space.layers

    @property
    def spec_dict(self) -> dict[str, Any]:
        """The spec as recorded on the study (JSON form)."""
        return dict(self.attrs["spec"])

    @property
    def files_root(self) -> Path:
        """The store's folder: agents keep their files under it (paths relative to it)."""
        return Path(self.store.root)

    def counted_trials(self) -> int:
        """Trials that count toward ``--trials``: COMPLETE and PRUNED (failed ones and
        confirmations do not)."""
        from optuna.trial import TrialState

        counted = (TrialState.COMPLETE, TrialState.PRUNED)
        n = self.storage.get_n_trials(self.study_id, state=counted)
        if self.attrs.get("confirm"):  # set before a study's first confirmation
            n -= sum(is_confirmation(t) and t.state in counted for t in self.trials())
        return int(n)

    def next_trial_number(self) -> int:
        """The number the next trial of the study will get (trials of any state so far)."""
        return int(self.storage.get_n_trials(self.study_id))

    def trials(self) -> list[FrozenTrial]:
        """The study's trials, read-only."""
        return list(self.storage.get_all_trials(self.study_id, deepcopy=False))

    def study_attr(self, key: str) -> Any:
        """A study user attribute (``None`` when absent)."""
        return self.storage.get_study_user_attrs(self.study_id).get(key)

    def set_study_attr(self, key: str, value: Any) -> None:
        """Set a study user attribute (JSON-serializable value)."""
        self.storage.set_study_user_attr(self.study_id, key, value)
        self.attrs[key] = value

    def log_artifact(self, path: Path, folder: str) -> None:
        """Attach a file to the search's MLflow parent run under ``folder``."""
        self.tracker.log_files(self.parent_run_id, [path], folder)

    def record_view(self) -> StudyRecord:
        """The study as stored now (for fronts, picks and exports)."""
        return load_study_record(self.store, self.study_name)

    def _load_points(self) -> None:
        from optuna.trial import TrialState

        for t in self.storage.get_all_trials(
            self.study_id, deepcopy=False, states=(TrialState.COMPLETE,)
        ):
            if t.values is not None and meets_constraints(t) and not is_confirmation(t):
                self._points.append(list(t.values))
        self._update_front()

    def _update_front(self) -> None:
        import numpy as np

        from midl_autok import pareto

        if self._points:
            self.front_size = int(
                pareto.non_dominated(np.array(self._points), self.directions).sum()
            )
        if self.reference is not None:
            self.hypervolume = hypervolume(self._points, self.reference, self.directions)

    @property
    def normalized_hypervolume(self) -> float | None:
        return normalized_hypervolume(self.hypervolume, self.reference, self.attrs.get("ideal"))

    # -- sampler agents: ask / request / tell ------------------------------------------------

    def ask(self) -> optuna.Trial:
        """A new RUNNING trial, its sampler seeded from ``--seed`` and a reserved trial number."""
        if not isinstance(self.agent, SamplerAgent):
            raise TypeError(f"agent {self.agent.name!r} does not sample; it calls record()")
        started = time.perf_counter()
        self._enqueue_seed_point()
        number = reserve_number(self.study, self.parent_run_id)  # not a count: see reserve.py
        # an ask that took an older WAITING trial leaves this reservation for the next ask:
        # seeding that one from the same number again would propose the same schedule again
        reuse = self._seed_uses[number]
        self._seed_uses[number] += 1
        seed = self.agent.trial_seed(number)
        self.study.sampler = self.agent.create_sampler(derive_seed(seed, reuse) if reuse else seed)
        trial = self.study.ask()
        self.started_trial(trial.number, started)
        # A kill between ask() and these two writes leaves a RUNNING trial that names no
        # process; open_search fails such trials (recovery.fail_unowned_trials).
        trial.set_user_attr("host", self.host)
        trial.set_user_attr("pid", self.pid)
        return trial

    def _enqueue_seed_point(self) -> None:
        """Enqueue the next point of the seed grid (``search.seed_grid``), if one is due.

        Which points are due comes from the study's trials (user attr ``seed_grid``), so a
        resumed search continues the grid without repeating it; see
        :func:`~midl_autok.agents.seedgrid.next_seed_point`.
        """
        from midl_autok.agents.seedgrid import next_seed_point

        point = next_seed_point(
            self.agent,
            self.space,
            self.trials(),
            size=self.spec.search.seed_grid,
        )
        if point is not None:
            # Tagged as this search's reservation: if it is stopped before ``ask`` takes the
            # point, it fails the point (recovery.fail_own_running) and the grid retries it.
            attrs = {**point.user_attrs, ATTR_RESERVED_BY: self.parent_run_id}
            self.study.enqueue_trial(point.params, user_attrs=attrs)

    def provenance(self, trial_number: int) -> dict[str, Any]:
        """Provenance of a schedule evaluated as ``trial_number`` (spec included)."""
        return {
            "study": self.study_name,
            "trial": trial_number,
            "experiment": self.spec.name,
            "agent": self.agent.name,
            "space": self.attrs["space"],
            "seed": self.spec.seed,
            "midl_autok_version": __version__,
            "git_sha": git_sha(),
            "spec": self.attrs["spec"],
        }

    def request(
        self, trial_number: int, schedule: KSchedule, params: Mapping[str, Any] | None = None
    ) -> TrialRequest:
        """The plain-data request to evaluate ``schedule`` (its k snapped to whole groups
        in block-gated layers) as trial ``trial_number``."""
        return TrialRequest(
            spec=self.attrs["spec"],
            schedule=snap_schedule(schedule, self.block_gatings).to_dict(),
            trial_number=trial_number,
            params={**(params or {}), **rank_params(schedule.ranks)},  # ranks: their values
            tracking=self.tracker.ref(self.parent_run_id),
            tags={
                "study": self.study_name,
                "experiment": self.spec.name,
                "agent": self.agent.name,
                "space": self.attrs["space"],
            },
            provenance=self.provenance(trial_number),
            device=self.device,
            threads=self.threads,
        )

    def started_trial(self, number: int, started: float) -> None:
        """Note when trial ``number`` started (its ask-to-tell time counts in the summary)."""
        self._asked[number] = started

    def tell(self, trial: optuna.Trial, outcome: TrialOutcome) -> FrozenTrial:
        """Record ``outcome`` on ``trial`` (:func:`~midl_autok.search.recording.tell_outcome`)
        and count it."""
        frozen = recording.tell_outcome(
            self.study,
            trial,
            outcome,
            objectives=self.objectives,
            flops_budget=self.flops_budget,
        )
        self._after_trial(frozen, outcome)
        return frozen

    def fail(self, trial: optuna.Trial, reason: str) -> FrozenTrial:
        """Finish ``trial`` as FAIL without an outcome (e.g. interrupted)."""
        frozen = recording.fail_trial(self.study, trial, reason)
        self.new_trials += 1
        self.failed += 1
        return frozen

    def _after_trial(self, frozen: FrozenTrial, outcome: TrialOutcome) -> None:
        self.new_trials += 1
        self.train_s += outcome.train_s
        from optuna.trial import TrialState

        if frozen.state == TrialState.COMPLETE:
            self._log_front(frozen)
        elif frozen.state == TrialState.PRUNED:
            self.pruned += 1
        else:
            self.failed += 1
        started = self._asked.pop(frozen.number, None)
        if started is not None:
            self.trial_s += time.perf_counter() - started

    def _log_front(self, frozen: FrozenTrial) -> None:
        if frozen.values is not None and meets_constraints(frozen) and not is_confirmation(frozen):
            self._points.append(list(frozen.values))
            self._update_front()
        values = {"front_size": float(self.front_size)}
        if self.hypervolume is not None:
            values["hypervolume"] = self.hypervolume
        if self.normalized_hypervolume is not None:
            values["hypervolume_normalized"] = self.normalized_hypervolume
        self.tracker.log_metrics(self.parent_run_id, [(values, frozen.number)])

    # -- external agents ---------------------------------------------------------------------

    #: Record a schedule an agent evaluated itself: one Optuna trial + one MLflow child run
    #: (:func:`~midl_autok.search.recording.record_external`, which documents the arguments).
    record = recording.record_external

    # -- the end -----------------------------------------------------------------------------

    def summary(
        self, *, target: int, files: Sequence[Path] = (), stopped: str | None = None
    ) -> SearchSummary:
        record = self.record_view()
        return SearchSummary(
            study=self.study_name,
            store=self.store,
            target=target,
            completed=self.counted_trials(),
            new_trials=self.new_trials,
            failed=self.failed,
            hypervolume=record.hypervolume(),
            hypervolume_normalized=record.normalized_hypervolume(),
            front=[record.point(t) for t in record.front()],
            parent_run_id=self.parent_run_id,
            wall_s=time.perf_counter() - self.started,
            train_s=self.train_s,
            trial_s=self.trial_s,
            files=list(files),
            stopped=stopped,
            pruned=self.pruned,
        )

    def write_pareto(self, *, plotlyjs: str | bool = True) -> list[Path]:
        """Write ``pareto.{json,csv,html}`` and ``report.html`` to ``reports/<study>/`` and
        log them to the parent run.

        ``plotlyjs`` True (the default): the pages in the store load its one copy of plotly.js
        (``reports/plotly-<version>.min.js``, written once; they open offline), and the
        parent run's copies load it from plotly's CDN, so a search stores no plotly.js of its
        own. Otherwise as plotly's ``include_plotlyjs`` (``"cdn"``, a ``.js`` path), for both.
        """
        from midl_autok.results.files import shared_plotlyjs, write_pareto_files

        shared = plotlyjs is True
        if shared:
            plotlyjs = "../" + shared_plotlyjs(self.store.reports_dir).name
        files = write_pareto_files(
            self.record_view(), self.store.report_dir(self.study_name), plotlyjs=plotlyjs
        )
        page = self._write_report(plotlyjs)
        if page is not None:
            files.append(page)
        if not shared:
            self.tracker.log_files(self.parent_run_id, files)
            return files
        from plotly.io._utils import plotly_cdn_url

        with tempfile.TemporaryDirectory(prefix="midl-autok-pages-") as tmp:
            logged = []
            for path in files:
                if path.suffix == ".html":  # the same page, plotly.js from the CDN
                    copy = Path(tmp) / path.name
                    text = path.read_text(encoding="utf-8")
                    copy.write_text(
                        text.replace(f'src="{plotlyjs}"', f'src="{plotly_cdn_url()}"', 1),
                        encoding="utf-8",
                    )
                    path = copy
                logged.append(path)
            self.tracker.log_files(self.parent_run_id, logged)
        return files

    def _pareto_files(self) -> list[Path]:
        """The Pareto files and report of the study in ``reports/<study>/`` (empty while
        any of them is missing)."""
        folder = self.store.report_dir(self.study_name)
        paths = [folder / n for n in ("pareto.json", "pareto.csv", "pareto.html", "report.html")]
        return paths if all(p.is_file() for p in paths) else []

    def _write_report(self, plotlyjs: str | bool) -> Path | None:
        """The study's ``midl-autok report`` page, also logged to the parent run. A report
        that cannot be built is a warning, never a failed search (its trials are stored)."""
        from midl_autok.results.figures import export_command
        from midl_autok.results.report import build_report
        from midl_autok.schedule import write_atomic

        try:
            page = build_report(
                self.store,
                [self.study_name],
                export=lambda s, n: export_command(s, n, store=str(self.store.root)),
                plotlyjs=plotlyjs,
            )
            path = self.store.report_dir(self.study_name) / "report.html"
            write_atomic(path, page)
        except Exception as exc:  # the search's results are safe in the study already
            import logging

            logging.getLogger(__name__).warning("report.html not written: %s", exc)
            return None
        return path

    def finish(
        self, *, target: int, stopped: str | None = None, plotlyjs: str | bool = True
    ) -> SearchSummary:
        """Write the Pareto files (unless this invocation added no trial and they are there
        already: a rerun of a finished search writes nothing), end the parent run FINISHED,
        return the summary."""
        files = (self.new_trials == 0 and self._pareto_files()) or self.write_pareto(
            plotlyjs=plotlyjs
        )
        summary = self.summary(target=target, files=files, stopped=stopped)
        self.close(FINISHED)
        return summary

    def close(self, status: str = FINISHED) -> None:
        """End the parent run (idempotent)."""
        if self._parent_open:
            self._parent_open = False
            with contextlib.suppress(Exception):  # runs an earlier, killed search left behind
                recovery.end_runs_of_ended_parents(self.tracker)
            self.tracker.end_run(self.parent_run_id, status)

    def __enter__(self) -> SearchSession:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._parent_open:
            return
        if exc_type is None:
            self.close(FINISHED)
            return
        interrupted = issubclass(exc_type, (KeyboardInterrupt, SystemExit))
        with contextlib.suppress(Exception):  # no RUNNING leftovers, whatever was interrupted
            self._fail_own_running(
                "interrupted: the search was stopped" if interrupted else f"search failed: {exc}"
            )
        with contextlib.suppress(Exception):  # keep the Pareto files of the trials done
            if self.new_trials or not self._pareto_files():
                self.write_pareto()
        with contextlib.suppress(Exception):  # never hide the real error (disk full, ...)
            self.close(KILLED if interrupted else FAILED)

    def _fail_own_running(self, reason: str) -> None:
        recovery.fail_own_running(
            self.storage,
            self.study_id,
            self.study,
            self.tracker,
            opened=self.opened,
            parent_run_id=self.parent_run_id,
            reason=reason,
        )
