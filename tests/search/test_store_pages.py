"""The pages a search writes stay light (issue 17, point 13): one copy of plotly.js per
store, pages that load it (and open offline), and nothing rewritten by a rerun that adds no
trial. Real searches, real Optuna storage and MLflow store."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from searchkit import fresh_store, runs, tiny_spec

from midl_autok.search import run_search
from midl_autok.store import Store

MB = 1_000_000


def _files(store: Store) -> dict[str, tuple[int, int]]:
    """Every file of the store but the databases: path -> (size, mtime_ns)."""
    return {
        str(p.relative_to(store.root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in store.root.rglob("*")
        if p.is_file() and p.suffix not in (".db", ".lock") and "-journal" not in p.name
    }


def _script_src(page: Path) -> str:
    (src,) = set(re.findall(r'<script[^>]* src="([^"]+)"', page.read_text(encoding="utf-8")))
    return src


def test_one_plotly_copy_per_store_and_light_pages(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    first = run_search(tiny_spec(trials=2), store=store, study="a", device="cpu")
    run_search(tiny_spec(trials=2, seed=2), store=store, study="b", device="cpu")
    big = {name: size for name, (size, _) in _files(store).items() if size > MB}
    (shared,) = big  # plotly.js once, in reports/, whatever the number of pages
    assert re.fullmatch(r"reports/plotly-[\d.]+\.min\.js", shared), big
    for study in ("a", "b"):
        for name in ("pareto.html", "report.html"):
            page = store.report_dir(study) / name
            assert page.stat().st_size < 300_000
            src = _script_src(page)
            assert not src.startswith("http")  # offline: the store's copy
            assert (page.parent / src).resolve() == (store.root / shared).resolve()
    # the parent run's pages load plotly.js from the CDN: MLflow stores no copy either
    client = store.mlflow_client()
    (parent,) = runs(store, "a")[0]
    got = Path(client.download_artifacts(parent.info.run_id, "report.html", str(tmp_path)))
    assert _script_src(got).startswith("https://cdn.plot.ly/plotly-")
    assert got.stat().st_size < 300_000
    assert first.files and all(f.exists() for f in first.files)


def test_a_rerun_with_no_new_trial_writes_nothing(tmp_path: Path) -> None:
    store = fresh_store(tmp_path / "store")
    run_search(tiny_spec(trials=2), store=store, study="a", device="cpu")
    before = _files(store)
    again = run_search(tiny_spec(trials=2), store=store, study="a", device="cpu")
    assert again.new_trials == 0
    now = _files(store)
    changed = {k for k in now if now[k] != before.get(k)}
    assert set(before) <= set(now)
    # only the new parent run's spec.yaml: no page, no Pareto file rewritten or logged
    assert [Path(k).name for k in changed] == ["spec.yaml"], changed
    assert {p.name for p in again.files} == {
        "pareto.json",
        "pareto.csv",
        "pareto.html",
        "report.html",
    }
    more = run_search(tiny_spec(trials=3), store=store, study="a", device="cpu")
    assert more.new_trials == 1
    after = _files(store)
    page = "reports/a/report.html"
    assert after[page][1] > before[page][1]  # a search with a new trial rewrites the report


@pytest.mark.slow
def test_the_stores_report_opens_offline_in_chromium(tmp_path: Path) -> None:
    from browser import Browser

    store = fresh_store(tmp_path / "store")
    run_search(tiny_spec(trials=3), store=store, study="a", device="cpu")
    with Browser() as browser:
        for name, plots in (("report.html", 3), ("pareto.html", 1)):
            browser.open((store.report_dir("a") / name).as_uri())
            browser.wait_for(f"document.querySelectorAll('.js-plotly-plot').length >= {plots}")
            assert browser.errors == []
