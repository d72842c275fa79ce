"""Evaluate one schedule: train it and log its MLflow child run. Runs anywhere.

:func:`evaluate_trial` is the per-trial work every backend shares. It takes a
:class:`~midl_autok.search.outcome.TrialRequest` and returns a
:class:`~midl_autok.search.outcome.TrialOutcome` (plain data both). It never touches Optuna,
so it can run in this process or in a Ray worker; the driver turns the outcome into the Optuna
trial with :meth:`~midl_autok.search.session.SearchSession.tell`. The child run is created and
finished by :mod:`~midl_autok.search.recording`.

A failing evaluation (the loss became NaN, any exception, a non-finite final metric) is an
outcome with ``state="fail"`` and a ``fail_reason``; its child run ends FAILED with the epochs
that did complete. Only an interruption (``KeyboardInterrupt``/``SystemExit``) propagates,
after ending the child run as KILLED, and :class:`~midl_autok.search.outcome.StopTrial`,
raised by a hook when another process takes over the trial (the Ray backend's driver records a
trial its scheduler stopped as pruned and ends the child run itself), which leaves the run
alone.

A trial stopped at a rung by a :class:`~midl_autok.search.fidelity.RungHook` among ``hooks``
(the local backend's ``--early-stop``) is an outcome with ``state="pruned"``: the metrics of
its last epoch, the schedule it trained so far; its child run ends KILLED with tag ``pruned``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from midl_autok.metrics import public_metrics
from midl_autok.search.fidelity import RungHook, pruned_metrics
from midl_autok.search.outcome import (
    COMPLETE,
    FAIL,
    PRUNED,
    StopTrial,
    TrialOutcome,
    TrialRequest,
    non_finite,
)
from midl_autok.search.recording import finish_child_run, finish_pruned_run, start_child_run
from midl_autok.tracking import KILLED, Tracker
from midl_autok.trainer import TrainHooks

__all__ = ["StopTrial", "TrialOutcome", "TrialRequest", "evaluate_trial", "torch_threads"]


class _Recorder(TrainHooks):
    """Keeps the rows of the epochs that completed (for a run that fails later)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def on_epoch_end(self, epoch: int, metrics: Mapping[str, float]) -> None:
        self.rows.append(dict(metrics))


def evaluate_trial(
    request: TrialRequest,
    *,
    hooks: Sequence[TrainHooks] = (),
    on_run_started: Callable[[str], None] | None = None,
) -> TrialOutcome:
    """Train ``request.schedule`` under ``request.spec`` and log the MLflow child run.

    ``hooks`` are passed to the trainer; ``on_run_started`` receives the child run id as
    soon as it exists (the local backend stores it on the Optuna trial at once, so an
    interrupted trial's run can be found and ended later).
    """
    from midl_autok.schedule import KSchedule
    from midl_autok.spec import validate_spec
    from midl_autok.trainer import DivergedError, run_experiment

    start = time.perf_counter()
    spec = validate_spec(request.spec, source="trial spec")
    schedule = KSchedule.from_dict(request.schedule, source=f"trial {request.trial_number}")
    tracker = Tracker.from_ref(request.tracking) if request.tracking is not None else None
    run_id: str | None = None
    if tracker is not None:
        run_id = start_child_run(tracker, request)
        if on_run_started is not None:
            on_run_started(run_id)

    recorder = _Recorder()
    train_start = time.perf_counter()
    try:
        with torch_threads(request.threads):
            result = run_experiment(
                spec, schedule=schedule, device=request.device, hooks=[recorder, *hooks]
            )
        metrics, history = dict(result.metrics), list(result.history)
        realized = result.schedule or schedule
        reason = non_finite(metrics)
        pruned = _pruned_by(hooks) if result.status == "stopped" else None
    except StopTrial:
        raise
    except DivergedError as exc:
        metrics, history, realized, reason = {}, list(exc.history), schedule, str(exc)
        pruned = None
    except Exception as exc:
        metrics, history, realized, pruned = {}, recorder.rows, schedule, None
        reason = f"{type(exc).__name__}: {exc}".strip()
    except BaseException:
        if tracker is not None and run_id is not None:
            tracker.end_run(run_id, KILLED, reason="interrupted")
        raise
    train_s = time.perf_counter() - train_start

    if pruned is not None:  # the last epoch's metrics, as the Ray backend records them
        metrics, reason = pruned_metrics(history), pruned
    provenance = {**request.provenance, "mlflow_run_id": run_id}
    info = realized.with_info(metrics=public_metrics(metrics), provenance=provenance).to_dict()
    if tracker is not None and run_id is not None:
        if pruned is not None:
            finish_pruned_run(
                tracker, run_id, history=history, metrics=metrics, schedule=info, reason=pruned
            )
        else:
            finish_child_run(
                tracker, run_id, history=history, metrics=metrics, schedule=info, reason=reason
            )
    return TrialOutcome(
        state=PRUNED if pruned is not None else COMPLETE if reason is None else FAIL,
        metrics=metrics,
        history=history,
        schedule=info,
        mlflow_run_id=run_id,
        fail_reason=reason,
        train_s=train_s,
        total_s=time.perf_counter() - start,
    )


def _pruned_by(hooks: Sequence[TrainHooks]) -> str | None:
    """Why a :class:`RungHook` stopped the run (None: no rung stopped it)."""
    return next((h.pruned for h in hooks if isinstance(h, RungHook) and h.pruned), None)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads, then restore the previous number."""
    if not threads:
        yield
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
