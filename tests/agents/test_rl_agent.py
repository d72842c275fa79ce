"""RL agents (ppo, sac, a2c) in `midl-autok search`, and their policy in `train --controller`.

The main test runs the real commands in subprocesses: a short PPO search on synthetic-mlp
(2 epochs, 3 training episodes, 2 lambdas), its rerun (resume: nothing new), `pareto`,
`export` and `train --controller` with the saved policy. The library tests cover two
vectorized workers, the budget sweep, and a policy that replays its rollout as a controller.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from searchkit import fresh_store, quiet, runs, tiny_spec

pytest.importorskip("stable_baselines3")

from clikit import assert_user_error, run_cli

from midl_autok import metrics as M
from midl_autok.agents import make_agent
from midl_autok.agents.sb3 import ATTR_POLICY, PHASE_ROLLOUT, PHASE_TRAINING
from midl_autok.backends import run_search
from midl_autok.errors import SpecError
from midl_autok.schedule import LayerSpec
from midl_autok.store import Store, load_study_record, open_store

SEARCH = [
    "search", "synthetic-mlp", "--epochs", "2", "--agent", "ppo",
    "--episodes", "3", "--lambdas", "0.01,1", "--seed", "0",
]  # fmt: skip


def only_study(store: Store) -> str:
    from midl_autok.store import list_studies

    (name,) = list_studies(store)
    return name


# --------------------------------------------------------------------------- the CLI


def test_ppo_search_records_episodes_and_rollouts_and_drives_train(tmp_path: Path) -> None:
    root = tmp_path / "store"
    first = run_cli(*SEARCH, "--store", str(root))
    assert first.returncode == 0, first.stderr
    assert "policy: " in first.stdout
    assert "--controller" in first.stdout

    store = open_store(root)
    study = only_study(store)
    assert study.startswith("synthetic-mlp-ppo-seed0-")
    record = load_study_record(store, study)
    phases = [t.user_attrs["phase"] for t in record.trials]
    assert phases == [PHASE_TRAINING] * 3 + [PHASE_ROLLOUT] * 2  # 3 episodes + 2 lambdas
    assert [t.user_attrs["lam"] for t in record.trials[3:]] == [0.01, 1.0]
    assert all(0.01 <= t.user_attrs["lam"] <= 1.0 for t in record.trials[:3])
    assert [t.user_attrs["episode"] for t in record.trials[:3]] == [0, 1, 2]
    assert record.counts() == {"COMPLETE": 5}
    for t in record.trials:
        assert t.values == [t.user_attrs[M.VAL_ACCURACY], t.user_attrs[M.INFERENCE_FLOPS]]
        assert t.user_attrs["schedule"]["provenance"]["agent"] == "ppo"
        assert len(t.params) == 2 * 2  # the free space: one k fraction per layer and epoch
    # the rollouts share one fresh run seed (they differ only by lambda)
    assert record.trials[3].user_attrs["run_seed"] == record.trials[4].user_attrs["run_seed"]

    parents, children = runs(store, study)
    assert len(parents) == 1
    assert len(children) == 5
    assert {c.data.tags["phase"] for c in children} == {PHASE_TRAINING, PHASE_ROLLOUT}
    client = store.mlflow_client()
    artifacts = [a.path for a in client.list_artifacts(parents[0].info.run_id, "policy")]
    policy = root / record.attrs[ATTR_POLICY]["path"]
    assert policy.is_file()
    assert artifacts == [f"policy/{policy.name}"]

    # rerun: the policy and both rollouts exist, so nothing new is evaluated
    again = run_cli(*SEARCH, "--store", str(root))
    assert again.returncode == 0, again.stderr
    assert "0 new trial(s)" in again.stdout
    assert load_study_record(store, study).counts() == {"COMPLETE": 5}
    parents, children = runs(store, study)
    assert len(parents) == 2
    assert len(children) == 5

    front = run_cli("pareto", "--study", study, "--store", str(root), "--json")
    assert front.returncode == 0, front.stderr
    points = json.loads(front.stdout)
    assert points
    assert {p["trial"] for p in points} <= set(range(5))
    out = tmp_path / "knee.json"
    exported = run_cli(
        "export", "--study", study, "--store", str(root), "--pick", "knee", "-o", str(out)
    )
    assert exported.returncode == 0, exported.stderr
    assert json.loads(out.read_text())["provenance"]["agent"] == "ppo"

    saved = tmp_path / "live.json"
    trained = run_cli(
        "train", "--controller", str(policy), "--lam", "0.1", "--json",
        "--save-schedule", str(saved),
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    metrics = json.loads(trained.stdout)
    assert 0.0 <= metrics[M.VAL_ACCURACY] <= 1.0
    assert metrics[M.INFERENCE_FLOPS] > 0
    schedule = json.loads(saved.read_text())
    assert schedule["epochs"] == 2  # the policy's epochs and experiment by default
    assert schedule["provenance"]["controller"] == str(policy)

    assert_user_error(
        run_cli("train", "--controller", str(policy)),
        r"trained with lam in \[0.01, 1\]; choose one with --lam \(e.g. --lam 0.01\)",
    )
    assert_user_error(
        run_cli("train", "digits-mlp", "--controller", str(policy), "--lam", "0.1"),
        r"the policy was trained for MID-L layers body.0 \(64\), body.1 \(64\), but this "
        r"model has body.0 \(512\)",
    )


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        (
            ["--lambdas", "x"],
            r"--lambdas must be comma-separated numbers >= 0, e.g. 0.03,0.1,0.3, but got 'x'",
        ),
        (["--lambdas", "0.1,-1"], r"--lambdas must be comma-separated numbers >= 0"),
        (["--budgets", "0.5,2"], r"--budgets must be comma-separated numbers in \(0, 1\]"),
        (["--episodes", "0"], r"--episodes must be an integer >= 1, but got 0"),
        (["--workers", "0"], r"--workers must be an integer >= 1, but got 0"),
        (["--trials", "5"], r"--trials does not apply to agent 'ppo'"),
        (["--budgets", "0.5", "--lambdas", "0.1,1"], r"with budgets give at most one lambda"),
        (["--space", "cosine", "--agent", "tpe", "--episodes", "3"], r"--episodes applies to"),
    ],
)
def test_bad_search_options_are_one_line_errors(
    args: list[str], pattern: str, tmp_path: Path
) -> None:
    base = ["search", "synthetic-mlp", "--agent", "ppo", "--store", str(tmp_path / "s")]
    assert_user_error(run_cli(*base, *args), pattern)


def test_bad_policy_files_are_one_line_errors(tmp_path: Path) -> None:
    assert_user_error(
        run_cli("train", "--controller", str(tmp_path / "missing.zip")), r"policy file not found"
    )
    not_zip = tmp_path / "policy.zip"
    not_zip.write_text("not a zip")
    assert_user_error(run_cli("train", "--controller", str(not_zip)), r"not a readable policy zip")
    assert_user_error(
        run_cli("train", "--controller", str(not_zip), "--k-fraction", "0.5"),
        r"give either --controller or --k-fraction, not both",
    )
    assert_user_error(run_cli("train", "--lam", "0.1"), r"--lam applies to --controller")


# --------------------------------------------------------------------------- the library


def test_agent_options_are_checked(tmp_path: Path) -> None:
    agent = make_agent("sac", seed=0, budgets=[0.8, 0.4, 0.8])
    assert agent.sweep == [0.8, 0.4]  # type: ignore[attr-defined]
    assert agent.lambdas == [0.0]  # type: ignore[attr-defined]
    assert make_agent("a2c").sweep == [0.01, 0.03, 0.1, 0.3, 1.0]  # type: ignore[attr-defined]
    with pytest.raises(SpecError, match=r"option lambdas of agent 'ppo' must be a list of num"):
        make_agent("ppo", lambdas=[0.1, "x"])
    with pytest.raises(
        SpecError, match=r"option budgets of agent 'ppo' .* 0.0 < x <= 1, but got 0"
    ):
        make_agent("ppo", budgets=[0])
    with pytest.raises(SpecError, match=r"option episodes of agent 'ppo' must be an integer >= 1"):
        make_agent("ppo", episodes=0)
    with pytest.raises(SpecError, match=r"must be of type list, but got 0.1"):
        make_agent("ppo", lambdas=0.1)
    spec = tiny_spec(agent="ppo", options={"episodes": 1, "n_knots": 3})
    with pytest.raises(SpecError, match=r"unknown search option"):
        run_search(spec, store=tmp_path / "store", device="cpu")


def test_the_rl_agents_search_the_free_space_and_check_its_options() -> None:
    layers = [LayerSpec("body.0", 32), LayerSpec("body.1", 16)]
    agent = make_agent("ppo")
    space = agent.make_space("linear", layers, 3, {"min_fraction": 0.1})
    assert (space.name, space.min_fraction, space.max_fraction) == ("free", 0.1, 1.0)
    assert len(space.param_names()) == 2 * 3  # one k fraction per layer and epoch
    with pytest.raises(SpecError, match=r"^agent 'ppo' takes only the space option min_fraction"):
        agent.make_space("linear", layers, 3, {"min_fraction": 0.1, "n_knots": 3})
    with pytest.raises(SpecError, match=r"max_fraction must be 1, but got 0.5$"):
        agent.make_space("linear", layers, 3, {"max_fraction": 0.5})


def test_two_workers_and_a_budget_sweep(tmp_path: Path) -> None:
    """SubprocVecEnv episodes are all recorded; each rollout meets its hard budget."""
    store = fresh_store(tmp_path / "store")
    options = {"episodes": 4, "budgets": [0.6, 0.9], "workers": 2}
    summary = run_search(tiny_spec(agent="a2c", options=options), store=store, device="cpu")
    record = load_study_record(store, summary.study)
    assert [t.user_attrs["phase"] for t in record.trials] == ["training"] * 4 + ["rollout"] * 2
    assert record.counts() == {"COMPLETE": 6}
    for t in record.trials:
        assert t.user_attrs["lam"] == 0.0
        assert t.user_attrs[M.INFERENCE_FLOPS_RATIO] <= t.user_attrs["budget"] + 1e-9
    assert [t.user_attrs["budget"] for t in record.trials[4:]] == [0.6, 0.9]
    # each worker ran its own episodes (different runs)
    seeds = {t.user_attrs["run_seed"] for t in record.trials[:4]}
    assert len(seeds) == 4
    _, children = runs(store, summary.study)
    assert len(children) == 6


@pytest.fixture(scope="module")
def ppo_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, str]:
    """A PPO search of the tiny spec: 2 training episodes, one rollout at lambda 0.3."""
    quiet()
    store = fresh_store(tmp_path_factory.mktemp("ppo") / "store")
    spec = tiny_spec(agent="ppo", options={"episodes": 2, "lambdas": [0.3]})
    summary = run_search(spec, store=store, device="cpu")
    return store, summary.study


def test_the_policy_replays_its_rollout_as_a_controller(ppo_search: tuple[Store, str]) -> None:
    """Same run seed: PolicyController in `train` makes exactly the rollout's schedule."""
    from midl_autok.rl import PolicyController
    from midl_autok.spec import validate_spec
    from midl_autok.trainer import TrainConfig, build_for_spec, dataset_for_spec, train

    store, study = ppo_search
    record = load_study_record(store, study)
    rollout = record.trials[-1]
    assert rollout.user_attrs["phase"] == PHASE_ROLLOUT
    policy = store.root / record.attrs[ATTR_POLICY]["path"]

    spec = validate_spec(record.attrs["spec"])
    data = dataset_for_spec(spec)
    seed = int(rollout.user_attrs["run_seed"])
    model = build_for_spec(spec, data, seed=seed)
    config = TrainConfig.from_spec(spec, device="cpu", seed=seed)
    controller = PolicyController.from_file(
        policy, model=model, data=data, epochs=config.epochs, lam=0.3
    )
    result = train(model, data, config=config, controller=controller)
    assert result.schedule is not None
    assert [list(row) for row in result.schedule.k] == rollout.user_attrs["schedule"]["k"]
    assert result.metrics[M.VAL_ACCURACY] == rollout.user_attrs[M.VAL_ACCURACY]


def test_the_agent_records_the_envs_episode_record(ppo_search: tuple[Store, str]) -> None:
    """The env's last info carries the episode record; the rollout trial and its MLflow child
    run hold exactly that record (schedule, seed, lambda, final metrics, per-epoch history)."""
    import torch

    from midl_autok.agents import derive_seed
    from midl_autok.agents.sb3 import make_env
    from midl_autok.env import EPISODE_KEY
    from midl_autok.rl import load_policy, play

    store, study = ppo_search
    record = load_study_record(store, study)
    trial = record.trials[-1]
    policy = load_policy(store.root / record.attrs[ATTR_POLICY]["path"])
    config, spec_dict = policy.env_config, record.attrs["spec"]
    kwargs = {"lam": tuple(config["lam"]), "min_fraction": config["min_fraction"], "device": "cpu"}
    env = make_env(spec_dict, kwargs, seed=0, threads=None, log_lam=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the search ran it (--threads 1)
    try:
        seed = derive_seed(spec_dict["seed"], 2)  # the agent's rollout seed
        info = play(policy.policy_fn(), env, seed=seed, options={"lam": 0.3})
    finally:
        torch.set_num_threads(threads)
    episode = info[EPISODE_KEY]
    assert episode["status"] == "completed"
    assert trial.state.name == "COMPLETE"
    assert episode["seed"] == trial.user_attrs["run_seed"]
    assert (episode["lam"], episode["budget"]) == (
        trial.user_attrs["lam"],
        trial.user_attrs["budget"],
    )
    assert episode["schedule"]["k"] == trial.user_attrs["schedule"]["k"]
    for key, value in episode["metrics"].items():
        assert trial.user_attrs[key] == value, key

    client = store.mlflow_client()
    run_id = trial.user_attrs["schedule"]["provenance"]["mlflow_run_id"]
    logged = client.get_run(run_id).data.metrics
    assert logged["episode_return"] == episode["return"]
    for key, value in episode["metrics"].items():
        assert logged[key] == value, key
    for key in (M.VAL_ACCURACY, M.TRAIN_LOSS, M.INFERENCE_FLOPS):
        points = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        assert [m.value for m in points] == [row[key] for row in episode["history"]], key
    assert len(client.get_metric_history(run_id, M.EPOCH_TIME_S)) == 2  # wall times: tracked
    assert M.EPOCH_TIME_S not in episode["history"][0]  # but not in the env's info
