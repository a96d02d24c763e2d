"""What a person sees: the MLflow UI and the Snakemake report of the tiny grid, opened in a real
Chromium (Playwright, system browser; skipped with the reason where either is missing). Every
page must load without an uncaught JavaScript error.

Besides rendering, these tests pin three recording bugs that must not come back: an empty
`dataset_sha256` tag (`{}`), metric timestamps of 0 with a run that starts at logging time
(1970 dates, a ~150 ms duration on the page), and a false `train.peak_mem_mb` point at step 0.
Timestamps and histories are read from the REST API of the same server the browser uses."""

from __future__ import annotations

import json
import math
import os
import re
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from browser import Page, chromium
from tiny_workflow import EXPERIMENT, RUNS, SEEDS

# The headline metric as MLflow records it: NDCG@10 under plain dot product, per seed on each
# child run and the mean over seeds on each parent run.
NDCG_KEY = "ndcg_10.dot"
TRAINED = [run for run, recipe in RUNS.items() if recipe["method"] != "none"]
UI_TIMEOUT_MS = 60_000
# Metrics are logged at the tables' 4 decimals.
LOGGED_PRECISION = 0.5e-4 + 1e-9
# Any real timestamp is after this (2020-01-01, in ms); a 0 or a seconds value is not.
EPOCH_2020_MS = 1_577_836_800_000
# A 1970 date on a page (a zero timestamp), not the digits of a metric value such as 0.1970.
YEAR_1970 = re.compile(r"(?<![\d.])1970(?!\d)")


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def api(base: str, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/api/2.0/mlflow{path}", data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def tags(run: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["data"].get("tags", [])}


@pytest.fixture(scope="module")
def store(mlflow_ui):
    """The experiment and its runs, as the server that the browser talks to returns them."""
    experiment = api(mlflow_ui, "/experiments/get-by-name?experiment_name=" + EXPERIMENT)["experiment"]
    runs = api(mlflow_ui, "/runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000})["runs"]
    parents = {tags(r)["run"]: r for r in runs if tags(r).get("pipeline.level") == "parent"}
    children = {(tags(r)["run"], int(tags(r)["seed"])): r for r in runs if tags(r).get("pipeline.level") == "seed"}
    # The zero-shot model is one run (its weights do not depend on the seed), the others have seeds.
    assert set(parents) == set(RUNS) and set(children) == {(r, s) for r in TRAINED for s in SEEDS}
    return {"experiment_id": experiment["experiment_id"], "parents": parents, "children": children}


def open_run(page, base: str, experiment_id: str, run: dict, tab: str = "") -> str:
    """Open a run's page (overview, or a tab such as model-metrics) and return its text."""
    run_id = run["info"]["run_id"]
    page.goto(f"{base}/#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}")
    page.get_by_text(run["info"]["run_name"], exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
    return page.inner_text("body")


def test_uncaught_page_errors_fail_the_test(browser):
    """The guard every test below relies on: an uncaught JavaScript error is recorded and fails."""
    pg = Page(browser)
    try:
        pg.page.set_content("<script>setTimeout(() => { throw new Error('boom'); }, 0)</script>")
        pg.page.wait_for_timeout(200)
        with pytest.raises(AssertionError, match="boom"):
            pg.check()
    finally:
        pg.context.close()


# ----------------------------------------------------------------------------- the experiment page
def _run_link(page, run: dict):
    return page.locator(f"a[href*='/runs/{run['info']['run_id']}']").first


# MLflow 3 opens an experiment in its GenAI view unless told otherwise; these are training runs.
RUNS_VIEW = "runs?workflowType=machine_learning"
# The [+] button in the run-name cell of a parent row that shows its nested child runs.
EXPAND_CHILDREN = "button[data-component-id*='runnamecellrenderer']"


def test_experiment_page_lists_parent_and_nested_child_runs(browser, mlflow_ui, store):
    with Page(browser) as page:
        page.goto(f"{mlflow_ui}/#/experiments/{store['experiment_id']}/{RUNS_VIEW}")
        # Rows are found by their run links (run names also appear in the experiment's description).
        for run in store["parents"].values():
            _run_link(page, run).wait_for(timeout=UI_TIMEOUT_MS)
        expanders = page.locator(EXPAND_CHILDREN)
        expanders.nth(len(TRAINED) - 1).wait_for(timeout=UI_TIMEOUT_MS)
        # Every trained run expands to its seeds; the zero-shot model is one run with none.
        assert expanders.count() == len(TRAINED), "not every trained run can be expanded"
        # Children are nested: hidden until their parent row is expanded.
        assert not any(_run_link(page, run).count() for run in store["children"].values())
        for i in range(expanders.count()):
            expanders.nth(i).click()
        for run in store["children"].values():
            _run_link(page, run).wait_for(timeout=UI_TIMEOUT_MS)
        assert not YEAR_1970.search(page.inner_text("body")), "the runs table shows 1970 dates"


# ----------------------------------------------------------------------------- a run page
def test_training_loss_chart_renders(browser, mlflow_ui, store):
    child = store["children"][(TRAINED[-1], SEEDS[0])]
    with Page(browser) as page:
        open_run(page, mlflow_ui, store["experiment_id"], child, "model-metrics")
        page.get_by_placeholder("Search metric charts").fill("train.loss")
        card = page.locator("[data-testid='experiment-view-compare-runs-card']") \
            .filter(has=page.locator("h4[title='train.loss']")).first
        card.wait_for(timeout=UI_TIMEOUT_MS)
        plot = card.locator(".js-plotly-plot svg.main-svg").first
        plot.wait_for(timeout=UI_TIMEOUT_MS)
        box = plot.bounding_box()
        assert box and box["width"] > 50 and box["height"] > 50, "train.loss chart has no drawing area"
        # A line trace through the three steps (plotly draws it as one SVG path).
        line = card.locator(".scatterlayer path.js-line").first
        line.wait_for(state="attached", timeout=UI_TIMEOUT_MS)
        assert len(re.findall(r"[ML]", line.get_attribute("d") or "")) >= 3, "train.loss line has fewer than 3 points"


def test_dataset_sha256_tag_is_recorded_and_shown(browser, mlflow_ui, store):
    for (run, seed), child in store["children"].items():
        value = tags(child).get("dataset_sha256", "")
        assert value.strip() not in ("", "{}", "[]", "null"), f"{run} seed {seed}: dataset_sha256 tag is {value!r}"
        assert re.search(r"\b[0-9a-f]{64}\b", value), f"{run} seed {seed}: no sha256 in dataset_sha256 {value!r}"
    child = store["children"][(TRAINED[0], SEEDS[0])]
    digest = re.search(r"\b[0-9a-f]{64}\b", tags(child)["dataset_sha256"]).group(0)
    with Page(browser) as page:
        text = open_run(page, mlflow_ui, store["experiment_id"], child)
        assert "dataset_sha256" in text
        assert digest[:16] in page.content(), "the run page does not show the dataset checksum"


def _summary_ndcg(finished_run) -> pd.DataFrame:
    frame = pd.read_csv(finished_run / "results" / EXPERIMENT / "tables" / "summary.csv")
    return frame[frame.scoring == "dot"].set_index(["run", "seed"])["ndcg@10"]


def _shown_value(page, key: str) -> str:
    """The value the run page's metrics table shows for `key` (searched, so it is on screen)."""
    page.get_by_placeholder("Search metrics").fill(key)
    page.get_by_text(key, exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
    text = page.inner_text("body")
    match = re.search(r"(?m)^" + re.escape(key) + r"\s+(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)", text)
    assert match, f"metric {key} is not shown on the page"
    return match.group(1)


def _assert_close(shown: str, expected: float, where: str) -> None:
    decimals = len(shown.split(".")[1]) if "." in shown and "e" not in shown.lower() else 6
    # MLflow holds 4 decimals (what the tables show); the page may round further.
    tolerance = 0.5 * 10 ** -min(decimals, 4) + 1e-9
    assert math.isclose(float(shown), expected, abs_tol=tolerance), f"{where}: page shows {shown}, " \
        f"summary.csv has {expected}"


def test_headline_metric_on_run_pages_equals_summary_csv(browser, mlflow_ui, store, finished_run):
    ndcg = _summary_ndcg(finished_run)
    # Every run, through the API of the same server: children per seed, parents the mean.
    for (run, seed), child in store["children"].items():
        metrics = {m["key"]: m["value"] for m in child["data"]["metrics"]}
        assert NDCG_KEY in metrics, f"{run} seed {seed}: no metric {NDCG_KEY!r}"
        assert math.isclose(metrics[NDCG_KEY], ndcg[(run, seed)], abs_tol=LOGGED_PRECISION), (run, seed)
    for run, parent in store["parents"].items():
        metrics = {m["key"]: m["value"] for m in parent["data"]["metrics"]}
        assert NDCG_KEY in metrics, f"{run} (parent): no metric {NDCG_KEY!r}"
        assert math.isclose(metrics[NDCG_KEY], ndcg[run].mean(), abs_tol=LOGGED_PRECISION), run
    # And what a person reads on the run pages.
    run = TRAINED[-1]
    child, parent = store["children"][(run, SEEDS[0])], store["parents"][run]
    with Page(browser) as page:
        open_run(page, mlflow_ui, store["experiment_id"], child)
        _assert_close(_shown_value(page, NDCG_KEY), float(ndcg[(run, SEEDS[0])]), f"{run} seed {SEEDS[0]}")
        open_run(page, mlflow_ui, store["experiment_id"], parent)
        _assert_close(_shown_value(page, NDCG_KEY), float(ndcg[run].mean()), f"{run} (mean over seeds)")


# ----------------------------------------------------------------------------- recording bugs
def _history(base: str, run: dict, key: str) -> list[dict]:
    query = urllib.parse.urlencode({"run_id": run["info"]["run_id"], "metric_key": key, "max_results": 1000})
    return api(base, f"/metrics/get-history?{query}").get("metrics", [])


def test_runs_carry_real_training_times(browser, mlflow_ui, store, finished_run):
    """Run start/end are the training's own start/end (not the moment the aggregate step logged
    them), and every metric point has a real timestamp, not 0 (which the UI shows as 1970)."""
    for (run, seed), child in store["children"].items():
        info = child["info"]
        start, end = int(info["start_time"]), int(info.get("end_time") or 0)
        assert start > EPOCH_2020_MS and end >= start, (run, seed, info)
        for metric in child["data"]["metrics"]:
            assert int(metric["timestamp"]) > EPOCH_2020_MS, f"{run} seed {seed}: {metric}"
        if run not in TRAINED:
            continue
        summary = finished_run / "results" / EXPERIMENT / "models" / "scifact-mini" / run / f"seed{seed}" / "train_summary.json"
        trained_until_ms = summary.stat().st_mtime * 1000
        # The bug: a run that starts when the aggregate step logs it, long after training ended.
        assert start <= trained_until_ms + 1000, f"{run} seed {seed}: run starts after its training ended"
        steps = _history(mlflow_ui, child, "train.loss")
        assert [m["step"] for m in steps] == [1, 2, 3]
        for point in steps:
            assert start - 1000 <= int(point["timestamp"]) <= end + 1000, (run, seed, point, info)
    with Page(browser) as page:
        child = store["children"][(TRAINED[0], SEEDS[0])]
        text = open_run(page, mlflow_ui, store["experiment_id"], child)
        assert not YEAR_1970.search(text), "the run page shows 1970 dates"
        year = time.strftime("%Y", time.localtime(int(child["info"]["start_time"]) / 1000))
        assert year in text


def test_peak_memory_curve_has_no_step_zero_point(mlflow_ui, store):
    for (run, seed), child in store["children"].items():
        if run not in TRAINED:
            continue
        steps = [m["step"] for m in _history(mlflow_ui, child, "train.peak_mem_mb")]
        assert steps == [1, 2, 3], f"{run} seed {seed}: train.peak_mem_mb at steps {steps}"


# ----------------------------------------------------------------------------- Snakemake report
HEADLINE_HEADER = re.compile(r"NDCG@10")  # case-sensitive: summary.csv's own header says ndcg@10
GENERAL_SECTIONS = {"Workflow", "Statistics", "About"}


def _headline_tables(page):
    """Tables headed NDCG@10 in the page or any frame (the report shows HTML results in an iframe)."""
    for frame in page.frames:
        tables = frame.locator("table").filter(has=frame.locator("th", has_text=HEADLINE_HEADER))
        if tables.count():
            return tables
    return None


def _found(page) -> bool:
    page.wait_for_timeout(500)
    return _headline_tables(page) is not None


def test_snakemake_report_shows_the_headline_table(browser, tiny_report):
    """The report renders, and somewhere in it (the front page, a result's description, or a
    result shown as HTML) there is a table headed NDCG@10: headline.md's table."""
    report = tiny_report.as_uri()
    seen = []
    with Page(browser) as page:
        page.goto(report)
        page.get_by_text("Workflow", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        found = _found(page)
        categories = [t.strip() for t in page.locator("nav li a").all_inner_texts()
                      if t.strip() and t.strip() not in GENERAL_SECTIONS]
        assert categories, "the report lists no result categories"

        def rows_of(category):
            page.goto(report)
            page.locator("nav li a", has_text=category).first.click()
            return page.locator("tr").filter(has=page.locator("a[iconname='information-circle']"))

        for category in categories:
            if found:
                break
            for i in range(rows_of(category).count()):
                row = rows_of(category).nth(i)
                seen.append(f"{category}/{row.locator('td').first.inner_text().strip()}")
                href = row.locator("a[iconname='eye']").first.get_attribute("href") or ""
                row.locator("a[iconname='information-circle']").first.click()  # its description
                found = _found(page)
                if found:
                    break
                if href.startswith("data:text/html"):  # the result opened as its own page
                    page.goto(href)
                elif href == "#":  # the result shown inside the report (HTML, in an iframe)
                    rows_of(category).nth(i).locator("a[iconname='eye']").first.click()
                else:
                    continue
                found = _found(page)
                if found:
                    break
        assert found, f"no table headed NDCG@10 in the report (looked at the front page and {seen})"
        table = _headline_tables(page).first
        assert table.locator("tr").count() >= 1 + len(RUNS)
        assert all(table.get_by_text(run, exact=True).count() for run in RUNS), "a run is missing from the table"


# ----------------------------------------------------------------------------- reading order
class Clicks:
    """Counts the clicks a person makes (what README's 'in N clicks' means)."""

    def __init__(self):
        self.count = 0

    def __call__(self, locator, **kwargs):
        self.count += 1
        locator.click(**kwargs)


DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def _screenshot(page, name: str) -> None:
    """Refresh a README screenshot when SCREENSHOTS=1 (kept out of ordinary test runs)."""
    if os.environ.get("SCREENSHOTS") == "1":
        DOCS_IMG.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMG / name))


def test_printed_url_opens_the_model_training_runs_table(browser, mlflow_ui, store, finished_run):
    """The experiment is tagged as model training (MLflow's own tag), and the URL `make ui`
    prints opens its runs table in the model-training view, not the GenAI overview."""
    import yaml

    from pipeline.results.mlflow_ui import runs_url

    experiment = api(mlflow_ui, "/experiments/get-by-name?experiment_name=" + EXPERIMENT)["experiment"]
    kind = {t["key"]: t["value"] for t in experiment.get("tags", [])}.get("mlflow.experimentKind")
    assert kind == "custom_model_development"
    cfg = yaml.safe_load((finished_run / "tiny.yaml").read_text())
    cfg["mlflow"] = {"store": str(finished_run / "results" / "mlflow.db")}
    port = mlflow_ui.rsplit(":", 1)[1]
    with Page(browser) as page:
        page.goto(runs_url(cfg, int(port)))
        for run in store["parents"].values():
            _run_link(page, run).wait_for(timeout=UI_TIMEOUT_MS)
        assert page.get_by_text("Runs", exact=True).count(), "not the runs table"
        assert not page.get_by_text("Detect Issues").count(), "the GenAI overview opened"


def test_per_method_view_in_at_most_5_clicks(browser, mlflow_ui, store):
    """From the experiments list to one row per run with NDCG@10, p, MDD and peak memory, with
    the Dataset and Version columns filled, clicking as a person would and counting the clicks."""
    click = Clicks()
    with Page(browser, viewport=(2400, 1000)) as page:
        page.goto(f"{mlflow_ui}/#/experiments")
        click(page.get_by_text(EXPERIMENT, exact=True).first)
        link = page.get_by_role("link", name="Per-method view")
        link.wait_for(timeout=UI_TIMEOUT_MS)
        page.wait_for_timeout(1500)  # MLflow's first-visit popovers open after the page
        got_it = page.get_by_role("button", name="Got it")
        if got_it.count():  # MLflow's one-time "Detect issues" popover covers the page
            click(got_it.first)
        with page.context.expect_page() as opened:  # the description's links open a new tab
            click(link)
        view = opened.value
        view.on("pageerror", lambda exc: pytest.fail(f"uncaught page error: {exc}"))
        for run in store["parents"].values():
            _run_link(view, run).wait_for(timeout=UI_TIMEOUT_MS)
        close = view.get_by_role("button", name="Close")
        if close.count() and close.first.is_visible():  # the Assistant panel takes a third of the width
            click(close.first)
        view.wait_for_timeout(1000)
        assert click.count <= 5, f"{click.count} clicks"
        headers = " ".join(view.locator("[role=columnheader]").all_inner_texts())
        for column in ("Dataset", "Version", "ndcg_10.dot", "p.dot", "mdd.dot", "cost.peak_mem_mb"):
            assert column in headers, f"no {column} column in the per-method view: {headers}"
        assert not any(_run_link(view, run).count() for run in store["children"].values()), "seed rows shown"
        # The grid splits each row into a pinned and a scrolling part: read the cells by column.
        commit = tags(next(iter(store["parents"].values())))["mlflow.source.git.commit"]
        for column, expected in (("Dataset", "scifact-mini ("), ("Version", commit[:6])):
            col_id = view.locator("[role=columnheader]", has_text=column).first.get_attribute("col-id")
            cells = view.locator(f"[role=gridcell][col-id='{col_id}']").all_inner_texts()
            assert len(cells) == len(store["parents"]), (column, cells)
            assert all(expected in cell for cell in cells), f"{column} column not filled: {cells}"
        _screenshot(view, "mlflow-per-method-view.png")
        view.close()


def test_report_opens_on_the_headline_table(browser, tiny_report):
    """The report's first category is the tables, and its first item the headline table."""
    with Page(browser, viewport=(1400, 900)) as page:
        page.goto(tiny_report.as_uri())
        page.get_by_text("Workflow", exact=True).first.wait_for(timeout=UI_TIMEOUT_MS)
        categories = [t.strip() for t in page.locator("nav li a").all_inner_texts()
                      if t.strip() and t.strip() not in GENERAL_SECTIONS]
        assert categories[0] == "1. Tables", categories
        page.locator("nav li a", has_text=categories[0]).first.click()
        first = page.locator("tr").filter(has=page.locator("a[iconname='information-circle']")).first
        first.wait_for(timeout=UI_TIMEOUT_MS)
        assert "Headline" in first.inner_text(), first.inner_text()
        first.locator("a[iconname='eye']").first.click()  # the table itself, as a reader opens it
        assert _found(page), "the first item does not show the headline table"
        _screenshot(page, "report-first-page.png")
