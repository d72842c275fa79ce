"""`midl-autok report`: the HTML page from real Optuna studies, checked in headless Chromium.

The studies are real sqlite Optuna studies whose trials follow the tracking contract (values
= objectives, user attrs = the KSchedule JSON, the metrics and the MLflow run id), with a
real MLflow experiment beside them, laid out like the embedded store.
"""

from __future__ import annotations

import math
import re
import subprocess
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from clikit import cli_env, run_cli

from midl_autok.schedule import KSchedule, LayerSpec

LAYERS = (LayerSpec("body.0", 64), LayerSpec("body.1", 32))
EPOCHS = 6
DENSE_FLOPS = 40_000


def _trial_record(rng: np.random.Generator, study: str, number: int) -> dict[str, Any]:
    """Metrics and schedule of one fake but contract-shaped trial."""
    start, end = rng.uniform(0.15, 1.0, size=2)
    ramp = np.linspace(1.0, 0.0, EPOCHS)
    fractions = [[end + (start - end) * r for r in ramp] for _ in LAYERS]
    schedule = KSchedule.from_fractions(LAYERS, fractions, arch="mlp", signature="test")
    active = schedule.active_fraction()
    ratio = 0.12 + 0.88 * active
    metrics = {
        "val_accuracy": round(0.55 + 0.4 * math.sqrt(active) + rng.normal(0, 0.02), 4),
        "test_accuracy": round(0.54 + 0.4 * math.sqrt(active), 4),
        "inference_flops": int(DENSE_FLOPS * ratio),
        "inference_flops_ratio": ratio,
        "active_fraction": active,
        "dense_inference_flops": DENSE_FLOPS,
    }
    run_id = f"run{number:04d}{study}"
    schedule = schedule.with_info(
        metrics=metrics,
        provenance={"study": study, "trial": number, "mlflow_run_id": run_id, "agent": "tpe"},
    )
    return {"schedule": schedule.to_dict(), **metrics, "mlflow_run_id": run_id}


def build_store(root: Path, studies: dict[str, int], *, failed: int = 1, seed: int = 0) -> Path:
    """A store folder with one Optuna study per ``{name: completed trials}`` (plus ``failed``
    failed trials and one infeasible trial each) and a matching MLflow experiment."""
    import optuna
    from mlflow.tracking import MlflowClient

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    root.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{root / 'optuna.db'}"
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    rng = np.random.default_rng(seed)
    t0 = datetime(2025, 1, 1, 12, 0, 0)
    for name, n in studies.items():
        study = optuna.create_study(
            study_name=name, storage=storage, directions=["maximize", "minimize"]
        )
        study.set_user_attr("objectives", ["val_accuracy", "inference_flops"])
        study.set_user_attr("reference_point", [0.0, float(DENSE_FLOPS)])
        study.set_user_attr("ideal", [1.0, 0.0])
        study.set_user_attr("agent", "tpe")
        exp = client.create_experiment(name, artifact_location=(root / "mlartifacts").as_uri())
        parent = client.create_run(exp, run_name=f"search {name}")
        for i in range(n + failed):
            record = _trial_record(rng, name, i)
            begin = t0 + timedelta(seconds=10 * i)
            state = optuna.trial.TrialState.COMPLETE if i < n else optuna.trial.TrialState.FAIL
            metrics = record
            system_attrs = {"constraints": [1.0 if i == 1 else -1.0]}  # trial 1 is infeasible
            study.add_trial(
                optuna.trial.FrozenTrial(
                    number=-1,
                    trial_id=-1,
                    state=state,
                    value=None,
                    values=[metrics["val_accuracy"], metrics["inference_flops"]] if i < n else None,
                    datetime_start=begin,
                    datetime_complete=begin + timedelta(seconds=8),
                    params={},
                    distributions={},
                    user_attrs=record if i < n else {"fail_reason": "NaN loss"},
                    system_attrs=system_attrs,
                    intermediate_values={},
                )
            )
            child = client.create_run(
                exp,
                run_name=f"trial {i}",
                tags={"mlflow.parentRunId": parent.info.run_id, "trial": str(i)},
            )
            for key in ("val_accuracy", "inference_flops_ratio"):
                client.log_metric(child.info.run_id, key, metrics[key])
            client.set_terminated(child.info.run_id, "FINISHED" if i < n else "FAILED")
        client.set_terminated(parent.info.run_id)
    for sub in ("mlartifacts", "reports"):
        (root / sub).mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_store(tmp_path_factory.mktemp("store"), {"alpha": 12, "beta": 8})


def storage_url(root: Path) -> str:
    return f"sqlite:///{root / 'optuna.db'}"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``midl-autok report ARGS``, with ``env`` added to the environment."""
    return run_cli("report", *args, env=cli_env(**(env or {})), timeout=300)


def completed(root: Path) -> dict[str, int]:
    """Completed trials per study, straight from Optuna."""
    import optuna

    names = optuna.study.get_all_study_names(storage_url(root))
    return {
        name: len(
            optuna.load_study(study_name=name, storage=storage_url(root)).get_trials(
                states=[optuna.trial.TrialState.COMPLETE]
            )
        )
        for name in names
    }


def test_studies_agree_with_the_store(store: Path) -> None:
    from midl_autok.results.record import load_study_record
    from midl_autok.results.studies import load_studies
    from midl_autok.store import open_store

    for study in load_studies(storage_url(store)):
        record = load_study_record(open_store(store), study.name)
        assert [p.number for p in study.pareto_points()] == [t.number for t in record.front()]
        assert 1 not in [p.number for p in study.pareto_points()]  # infeasible
        assert study.states == {"COMPLETE": len(study.points), "FAIL": 1}
        assert study.reference == [0.0, DENSE_FLOPS]
        assert all(p.schedule is not None and p.schedule.epochs == EPOCHS for p in study.points)


def test_hypervolume_curves_end_at_the_store_hypervolume(store: Path) -> None:
    from midl_autok.results.figures import hypervolume_figures
    from midl_autok.results.record import load_study_record
    from midl_autok.results.studies import load_studies
    from midl_autok.store import open_store

    studies = load_studies(open_store(store))
    by_trials, by_time = hypervolume_figures(studies)
    for study, trace, timed in zip(studies, by_trials.data, by_time.data, strict=True):
        record = load_study_record(open_store(store), study.name)
        assert trace.y[-1] == pytest.approx(record.normalized_hypervolume())
        assert list(trace.y) == sorted(trace.y)  # never decreases
        assert len(trace.x) == len(study.points)
        # wall clock: trial i completes 10 i + 8 s after the study's first start
        assert timed.x[0] == pytest.approx(8.0)
        assert timed.x[-1] == pytest.approx(10 * (len(study.points) - 1) + 8.0)


def search(root: Path, study: str, agent: str, trials: int = 3) -> None:
    """A real tiny `midl-autok search` into ``root``."""
    args = ["synthetic-mlp", "--epochs", "2", "--trials", str(trials), "--agent", agent]
    proc = run_cli("search", *args, "--study", study, "--store", str(root), timeout=300)
    assert proc.returncode == 0, proc.stderr


def check_page(browser: Any, html_file: Path, expected: dict[str, int]) -> None:
    """The report loads without a JS error and plots every completed trial of each study."""
    browser.open(html_file.as_uri())
    browser.wait_for("document.querySelectorAll('.js-plotly-plot').length >= 3")
    counts = browser.evaluate(
        """(() => {
            const out = {};
            for (const t of document.getElementById('front').data)
                if (t.meta.kind === 'trials') out[t.meta.study] = t.x.length;
            return out;
        })()"""
    )
    assert counts == expected
    assert browser.errors == []


@pytest.mark.slow
def test_report_of_real_searches(tmp_path: Path) -> None:
    from browser import Browser

    root = tmp_path / "store"
    search(root, "tiny-tpe", "tpe")
    search(root, "tiny-random", "random")
    out, png = tmp_path / "report.html", tmp_path / "front.png"
    proc = run(
        "--store",
        str(root),
        "--study",
        "tiny-tpe",
        "--study",
        "tiny-random",
        "-o",
        str(out),
        "--png",
        str(png),
    )
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    expected = completed(root)
    assert expected == {"tiny-tpe": 3, "tiny-random": 3}
    with Browser() as browser:
        check_page(browser, out, expected)
        assert (
            browser.evaluate("document.querySelectorAll('#schedules .js-plotly-plot').length") > 0
        )
        shot = browser.screenshot(tmp_path / "report.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_page_in_headless_chromium(tmp_path: Path) -> None:
    from browser import Browser

    odd = 'odd </script><b>"name"</b> & co'  # a study name the page must escape
    root = build_store(tmp_path / "store", {"alpha": 12, "beta": 8, odd: 4}, seed=1)
    out = tmp_path / "report.html"
    proc = run("--store", str(root), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert str(out) in proc.stdout
    page = out.read_text()
    assert "<script src=" not in page  # self-contained: plotly.js is inline, nothing fetched
    expected = completed(root)

    with Browser(width=1280, height=900) as browser:
        check_page(browser, out, expected)
        hover = browser.evaluate(
            "document.getElementById('front').data[0].customdata.map(c => c[3])"
        )
        assert hover[0].startswith("midl-autok export --study alpha --trial 0 --store ")
        heatmaps = browser.evaluate(
            "document.querySelectorAll('#schedules .js-plotly-plot').length"
        )
        rows = browser.evaluate("document.querySelectorAll('#pareto-table tbody tr').length")
        fronts = browser.evaluate(
            "document.getElementById('front').data.filter(t => t.meta.kind === 'front')"
            ".reduce((n, t) => n + t.x.length, 0)"
        )
        assert heatmaps == rows == fronts > 0
        hv = browser.evaluate("document.getElementById('hv-trials').data.length")
        assert hv == len(expected)
        assert browser.evaluate("document.title").endswith(odd)
        shot = browser.screenshot(tmp_path / "report.png")
        assert browser.errors == []
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000


def test_png_of_the_front(store: Path, tmp_path: Path) -> None:
    png = tmp_path / "front.png"
    proc = run("--store", str(store), "-o", str(tmp_path / "r.html"), "--png", str(png))
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_png_without_chrome_is_one_clear_line(store: Path, tmp_path: Path) -> None:
    png = tmp_path / "front.png"
    env = {"BROWSER_PATH": str(tmp_path / "no-chrome"), "HOME": str(tmp_path)}
    proc = run("--store", str(store), "-o", str(tmp_path / "r.html"), "--png", str(png), env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert "--png needs Chrome or Chromium" in lines[0]
    assert "report written to" in lines[0]
    assert not png.exists()
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")  # the page was


def test_png_with_a_browser_that_fails_to_start(store: Path, tmp_path: Path) -> None:
    """Chromium that exits at once: the HTML is still written, one line says why the PNG was
    not, exit status 2."""
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'cannot open display' >&2\nexit 1\n")
    broken.chmod(0o755)
    png, page = tmp_path / "front.png", tmp_path / "r.html"
    env = {"BROWSER_PATH": str(broken), "HOME": str(tmp_path)}
    proc = run("--store", str(store), "-o", str(page), "--png", str(png), env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert f"report written to {page}, but not {png}" in lines[0]
    assert "Chrome/Chromium failed to render the image" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not png.exists()
    assert page.read_text().startswith("<!DOCTYPE html>")


def test_png_survives_one_failed_browser_start(store: Path, tmp_path: Path) -> None:
    """The browser fails on the first start and works on the second (what a flaky start looks
    like to kaleido): the PNG is written, exit status 0."""
    import shutil

    real = shutil.which("chromium") or shutil.which("chromium-browser")
    assert real, "the browser tests need chromium (scripts/system-deps.sh installs it)"
    starts = tmp_path / "starts"
    flaky = tmp_path / "chromium"
    flaky.write_text(
        "#!/bin/sh\n"
        f"echo start >> {starts}\n"
        f'[ "$(wc -l < {starts})" -gt 1 ] || {{ echo "cannot open display" >&2; exit 1; }}\n'
        f'exec {real} "$@"\n'
    )
    flaky.chmod(0o755)
    png = tmp_path / "front.png"
    env = {"BROWSER_PATH": str(flaky), "HOME": str(tmp_path)}
    proc = run("--store", str(store), "-o", str(tmp_path / "r.html"), "--png", str(png), env=env)
    assert proc.returncode == 0, proc.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert starts.read_text().count("start") >= 2  # it did fail once, then started again


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "alpah"], r"unknown study .*'alpah'; did you mean 'alpha'\?"),
        (["--store", "/nonexistent/store"], r"no search results in /nonexistent/store"),
    ],
)
def test_user_errors(store: Path, args: list[str], message: str) -> None:
    proc = run("--store", str(store), *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert re.search(message, lines[0]), lines[0]


def test_schedule_heatmap_labels_are_readable() -> None:
    """Cell text and axis labels have a fixed size (plotly's automatic one shrank to ~5 px)."""
    from midl_autok.results.figures import schedule_heatmap

    layers = [LayerSpec("body.0", 512), LayerSpec("body.1", 512)]
    schedule = KSchedule.constant(layers, 20, 0.25)
    fig = schedule_heatmap(schedule, title="t")
    trace = fig.data[0]
    assert trace.texttemplate == "%{text}" and trace.textfont.size >= 10
    assert fig.layout.xaxis.tickfont.size >= 10 and fig.layout.yaxis.tickfont.size >= 10
    assert fig.layout.xaxis.title.text == "epoch"
    assert [list(row) for row in trace.text] == [[128] * 20, [128] * 20]
