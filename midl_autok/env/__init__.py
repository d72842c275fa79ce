"""The MID-L trainer as a Gymnasium environment: one episode = one training run, one step = one
epoch (registered as ``midl_autok/TopKSchedule-v0``, see :mod:`midl_autok.env_registration`).

The package: :mod:`~midl_autok.env.actions` (action -> k, the hard-budget clip, the
spend-budget fit),
:mod:`~midl_autok.env.observer` (the observation), :mod:`~midl_autok.env.topk` (the env),
:mod:`~midl_autok.env.pool` (cheap episodes over a pool of tasks through a task-free view,
``midl_autok/TopKSchedulePool-v0``).

**Action** ``Box(-1, 1, (L,), float32)``, one entry per MID-L layer (forward order): the k of
that layer for the epoch about to run::

    f_l = min_fraction + (1 - min_fraction) * (clip(a_l, -1, 1) + 1) / 2      in [min_fraction, 1]
    k_l = clip(round(f_l * d_l), 1, d_l)                                       (k_from_fraction)

The symmetric range (not [0, 1]) is what SB3 works best with: PPO/A2C sample a Gaussian around
the policy mean, which starts at 0 = the middle of the range, and SAC squashes with tanh into
[-1, 1]; SB3's env checker warns about any other range.

**Hard budget** (``hard_budget=True``): the deployed model is the final epoch's, so the action
of the **last** epoch is clipped so that its inference FLOPs <= ``budget * dense FLOPs``: if it
is over, every layer's k above its minimum ``k_min`` (``min_fraction`` of its width) shrinks by
one common factor, rounded down (:func:`clip_to_budget`). Earlier epochs are free (train wide,
then prune); the observation shows how far the current k is over the budget.

**Spend budget** (``spend_budget=True``, the resource-constrained action of AMC, He et al.
2018): **every** epoch's k is fit to the budget (:func:`fit_to_budget`): a decoded k over the
budget shrinks toward ``k_min`` by one common factor (as above), one under it grows toward the
full widths by one common factor, both rounded down. Every epoch (the deployed one included)
then costs ``<= budget * dense`` inference FLOPs, and less only by the rounding (under one unit
of k per layer) or when the full widths fit; the action decides the allocation across layers.
Every epoch, not only the last: a policy trained on short episodes (4 epochs) runs long ones
(30), and a "train wide, prune at the end" rule would deploy after 25% of training at the
deployed k in one and 3% in the other; the gate and light paths also learn at the k they are
deployed with, and training FLOPs stay within the budget too.

**Observation** ``Box(float32)`` of ``11 + 4 L`` features, in this order (names in
:attr:`Observer.names`), all deterministic (no wall time):

=================================  ===========================================================
``progress``                       completed epochs / T                                [0, 1]
``probe_loss``                     cross-entropy on the probe batch / ln C, clipped     [0, 4]
``probe_accuracy``                 accuracy on the probe batch                         [0, 1]
``val_loss``                       validation cross-entropy / ln C, clipped             [0, 4]
``val_accuracy``                   validation accuracy                                 [0, 1]
``lam``                            lam / (1 + lam), the episode's FLOPs weight          [0, 1]
``budget``                         b, the episode's budget (1 = dense when none)        [0, R]
``flops_ratio``                    rho = inference FLOPs at the current k / dense       [0, R]
``flops_headroom``                 b - rho (negative: over the budget)                 [-R, R]
``training_flops_spent``           training FLOPs so far / those of T dense epochs      [0, R]
``training_flops_remaining``       b - training_flops_spent                            [-R, R]
per layer ``<name>/k_fraction``    k / d of the last epoch (1 before the first)         [0, 1]
``<name>/gate_mean``               mean gate value g on the probe batch                 [0, 1]
``<name>/gate_entropy``            mean binary entropy of g, in bits                    [0, 1]
``<name>/selection_overlap``       mean per-sample Jaccard index of the selected set with the
                                   previous observation's, on the probe batch (1 at reset)
=================================  ===========================================================

C = number of classes; R = max(1, rho at full k, highest budget) (MID-L at full k costs more
than dense: gate and light paths come on top). The **probe batch** is the first ``probe_size``
training samples, evaluated in eval mode after each epoch (the epoch's running train loss mixes
the weights of a whole epoch and has no accuracy counterpart). A non-finite value (a diverging
model) becomes 0 or the bound it exceeds.

**Reward**, with ``acc_t`` the validation accuracy after epoch t (``acc_-1``: before training),
``rho_t`` the inference FLOPs ratio at epoch t's k, T epochs and the weight ``lam``::

    r_t      = (acc_t - acc_{t-1}) - lam * rho_t / T          every epoch (shaped progress)
    r_{T-1} += acc_{T-1} - lam * rho_{T-1}                   the deployed model

so the undiscounted return is ``2 acc_final - acc_-1 - lam * (mean_t rho_t + rho_final)``.
A diverging run (NaN/inf loss, :class:`~midl_autok.trainer.DivergedError`) ends the episode
(``terminated``) with ``info["diverged"] = info["failed"] = True`` and reward ``-2 - 2 lam R``
(:func:`diverged_penalty`), below any other step's reward (>= ``-1 - lam R (1 + 1/T)``).

**Seeding**: ``reset(seed=s)`` seeds ``self.np_random``; each episode draws its run seed (model
init, shuffling; ``info["seed"]``) from it first, so a seeded reset replays the same trajectory
for the same actions, at any ``lam``/``budget``. The data split is the spec's. ``lam`` and
``budget`` may be ranges ``(low, high)``, drawn uniformly per episode from ``self.np_random``,
or fixed for one episode with ``reset(options={"lam": ..., "budget": ...})``: a policy that
sees them can be rolled out at several values (a Pareto sweep).

**The episode record.** The step that ends an episode (the final epoch, a diverging or failed
run, or a trainer hook that stopped it) puts the whole episode in ``info["midl_autok/episode"]``
(:data:`EPISODE_KEY`), as SB3's ``Monitor`` puts ``info["episode"]``: ``status``
(``completed`` | ``stopped`` | ``failed``), ``reason`` (why it failed, else ``None``),
``diverged`` (the failure was a divergence),
``schedule`` (the k applied each epoch as a :class:`~midl_autok.schedule.KSchedule` dict,
including the epoch that failed; ``None`` when no epoch got a k), ``metrics`` (the final
metrics, ``{}`` when the run failed before the end), ``history`` (one row per completed epoch),
``return`` (the sum of the rewards), ``length`` (steps), ``lam``, ``budget`` and ``seed``.
:mod:`midl_autok.rl.episodes` reads it.

**Trainer hooks and failures.** ``reset(options={"hooks": [...]})`` runs
:class:`~midl_autok.trainer.TrainHooks` on the episode's run, at the trainer's three points (run
start, epoch end: ``False`` stops the run and truncates the episode, run end). With
``errors="end"`` (what a search wants: a failed run is a record, not a crash) an exception
raised while training an epoch or in a hook ends the episode like a divergence, with
``info["failed"] = True`` and its ``reason``; with the default ``errors="raise"`` it propagates.

``info`` holds only deterministic values; wall times are in :attr:`TopKScheduleEnv.timing`
(this episode so far) and :attr:`TopKScheduleEnv.last_episode_timing` (``epoch_time_s``: the
training pass of each epoch, as the trainer's rows have it).
"""

from __future__ import annotations

from midl_autok.env.actions import (
    KRule,
    clip_to_budget,
    decide_k,
    decode_action,
    diverged_penalty,
    fit_to_budget,
    lowest_k,
)
from midl_autok.env.observer import GLOBAL_FEATURES, LAYER_FEATURES, Observer
from midl_autok.env.pool import (
    TaskPoolEnv,
    TaskView,
    budget_position,
    lam_feature,
    low_fidelity,
)
from midl_autok.env.topk import EPISODE_KEY, TopKScheduleEnv

__all__ = [
    "EPISODE_KEY",
    "GLOBAL_FEATURES",
    "LAYER_FEATURES",
    "KRule",
    "Observer",
    "TaskPoolEnv",
    "TaskView",
    "TopKScheduleEnv",
    "budget_position",
    "clip_to_budget",
    "decide_k",
    "decode_action",
    "diverged_penalty",
    "fit_to_budget",
    "lam_feature",
    "low_fidelity",
    "lowest_k",
]
