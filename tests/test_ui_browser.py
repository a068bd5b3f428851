"""`python cli.py ui` in a real browser: headless chromium (Debian's; `.ci/run` installs it), a
fresh profile per test, driven over the DevTools protocol (tests/browser.py).

MLflow 3.17 ignores the experiment's kind tag when it picks a view: with nothing saved in the
browser it opens an experiment in its GenAI overview. So `cli.py ui` prints, for each hype
experiment, a link that says `workflowType=machine_learning`, and a hint about the sidebar switch
that makes a browser keep that choice. These tests open what it prints, as a person would: the
runs, a run's retained checkpoint files, and the experiment's Models table, where each retained
checkpoint is a LoggedModel with its epoch's metrics, until `cli.py cleanup` deletes it.

Screenshots go to the test's tmp_path, so that `make test` leaves the working tree as it was; with
HYPE_UI_SCREENSHOTS=1 those kept in docs/ (ui-runs, ui-run, ui-checkpoints, ui-models: the README
shows the last) are saved there instead (`HYPE_UI_SCREENSHOTS=1 pytest tests/test_ui_browser.py`).
Chromium missing is a failure, never a skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from cli import cli
from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.browser import Page, chromium_or_fail
from tests.datasets import write_tree_closure
from tests.servers import HOST, free_port, started
from tracker import layout
from tracker.checkpoints.models import BEST_TAG, KIND, KIND_TAG
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MODEL = "tree"
RUN_NAME = "tree-keep-3"
VENV_BIN = Path(sys.executable).parent
TREE_NODE = "[data-testid=artifact-tree-node]"  # one file or folder of the artifact tree
FINAL_MODEL = "model"  # the final embedding's LoggedModel, listed beside the checkpoints' ones
MONITOR = "map"  # the run's monitored metric (TrainConfig's default), evaluated every epoch here
MAX_CLICKS = 3  # issue 12: from the printed link to the run's checkpoint table with its metrics
SWIPE_PX = 200  # one sideways swipe over the Models table (its columns are 140-200 px wide)


def shots(tmp_path: Path) -> Path:
    """Where a screenshot kept in docs/ goes: there with HYPE_UI_SCREENSHOTS=1, else tmp_path."""
    return DOCS if os.environ.get("HYPE_UI_SCREENSHOTS") == "1" else tmp_path


def environ_without_mlflow() -> dict:
    """This process's environment less MLflow's variables (a tracking URI, a run id of the
    caller's): the commands under test get the store from --tracking-uri alone."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}


def checkpoint_model(epoch: int) -> str:
    """The name of an epoch's checkpoint model (tracker.checkpoints.models.model_name)."""
    return f"{MODEL}_epoch{epoch:04d}"


def anchor(text: str) -> str:
    """JS: the first link whose text is exactly `text`."""
    return f"[...document.querySelectorAll('a')].find(a => a.textContent.trim() === {json.dumps(text)})"


def leaf(text: str) -> str:
    """JS: the innermost element whose whole text is `text` (a tab, a switch's option)."""
    return (f"[...document.querySelectorAll('body *')].find(e => e.children.length === 0"
            f" && e.textContent.trim() === {json.dumps(text)})")


def route(page: Page) -> str:
    """The UI's route without its query: '/experiments/1/runs'."""
    return page.js("location.hash").removeprefix("#").split("?")[0]


@pytest.fixture(scope="module")
def ui(tmp_path_factory, _migrated_sqlite_db):
    """A run of 6 epochs keeping 3 checkpoints (each evaluated), in experiment `hype` of a store of
    its own, and `cli.py ui` on it; its printed link to hype's training runs. A test may delete
    checkpoints (cleanup): each one reads what the run retains when it starts (retained_epochs)."""
    chromium_or_fail()  # before the training: a missing browser is said first
    root = tmp_path_factory.mktemp("ui-browser")
    shutil.copy(_migrated_sqlite_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    graph = load_edge_csv(write_tree_closure(root / "tree_closure.csv", depth=2))
    config = TrainConfig(dim=2, epochs=6, burnin=1, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(store_every=True, model_name=MODEL, keep=3, checkpoint_root=root / "ckpt")
    out = run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment="hype",
                       run_name=RUN_NAME, progress=False)
    epochs = retained_epochs(uri, out.run_id)
    assert 3 <= len(epochs) <= 4 and epochs[-3:] == [4, 5, 6]  # the newest 3, and the best if older
    port = free_port()
    env = environ_without_mlflow()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    log = root / "ui.log"
    cmd = [sys.executable, str(ROOT / "cli.py"), "ui", "--port", str(port), "--tracking-uri", uri]
    with started(cmd, env, log, f"http://{HOST}:{port}/health"):
        printed = log.read_text()
        link = re.search(r"training runs of 'hype': (\S+)", printed)
        assert link, f"cli.py ui printed no link to hype's training runs:\n{printed}"
        yield SimpleNamespace(
            base=f"http://{HOST}:{port}", link=link.group(1), printed=printed, root=root, uri=uri,
            experiment_id=out.experiment_id, run_id=out.run_id)


def retained_epochs(uri: str, run_id: str) -> list[int]:
    """The epochs whose checkpoints the run retains, by its own records."""
    tags = MlflowClient(uri).get_run(run_id).data.tags
    return sorted(int(e) for e in tags[layout.TAG_RETAINED_EPOCHS].split(","))


def checkpoint_models(ui) -> dict:
    """The run's checkpoint models in the store (deleted ones are not listed): {name: LoggedModel}."""
    found = MlflowClient(ui.uri).search_logged_models([ui.experiment_id], filter_string=(
        f"source_run_id = '{ui.run_id}' AND tags.`{KIND_TAG}` = '{KIND}'"))
    return {m.name: m for m in found}


def close_assistant(page: Page) -> None:
    """MLflow's assistant panel opens itself on a profile's first visit and covers a third of
    the page; a person closes it."""
    button = "document.querySelector('button[aria-label=\"Close\"]')"
    if page.js(f"!!{button}"):
        page.click(button, "the assistant's close button")


def wait_for_runs_view(page: Page, ui, shot: Path) -> None:
    """The experiment's training runs (not the GenAI overview) with the run listed."""
    run_link = f"#/experiments/{ui.experiment_id}/runs/{ui.run_id}"
    page.wait_for(f"{anchor(RUN_NAME)}?.getAttribute('href')?.startsWith({json.dumps(run_link)})",
                  f"run {RUN_NAME} in the runs table", shot=shot)
    assert route(page) == f"/experiments/{ui.experiment_id}/runs", page.url()
    assert page.js("[...document.querySelectorAll('h2')].map(h => h.textContent.trim())") == ["Runs"]


def listed_checkpoints(page: Page) -> tuple[list[str], str]:
    """The run page's Artifacts tab: the entries of its checkpoint folder that a person sees (hit
    at their centre, so not hidden, collapsed or clipped), as `hype_checkpoints/<name>`; and where
    the tree's entries are, to tell when its opening animation has ended."""
    folder = layout.CHECKPOINT_FOLDER
    return page.js(f"""(() => {{
        const node = document.querySelector('{TREE_NODE}[artifact-name="{folder}"]');
        if (!node) return [[], ''];
        const li = node.closest('li');  // a folder's <li> holds its node and a <ul> of its entries
        const seen = n => {{
            const r = n.getBoundingClientRect();
            const hit = r.height > 0 && document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return Boolean(hit) && n.contains(hit);
        }};
        const names = [...li.querySelectorAll('{TREE_NODE}')]
            .filter(n => n !== node && n.closest('li').parentElement.closest('li') === li)
            .filter(seen).map(n => '{folder}/' + n.getAttribute('artifact-name'));
        const boxes = [...document.querySelectorAll('{TREE_NODE}')]
            .map(n => JSON.stringify(n.getBoundingClientRect())).join();
        return [names, boxes];
    }})()""")


def assert_run_overview_lists_checkpoint_models(page: Page, epochs: list[int], best: int) -> None:
    """The run page's Overview: its "Logged models" section (a table of name, step and status,
    no metrics) lists the final model and one model per retained checkpoint, and its tags say
    which epoch is the best."""
    names = sorted([FINAL_MODEL, *map(checkpoint_model, epochs)])
    deadline, listed = time.monotonic() + 20, []
    while sorted(listed) != names and time.monotonic() < deadline:
        listed = page.js("[...document.querySelectorAll('.ag-cell a')].map(a => a.textContent.trim())")
        time.sleep(0.2)
    assert sorted(listed) == names, f"the run's Logged models: {listed}"
    tag = f"{layout.TAG_BEST_EPOCH}: {best}"
    shown = f"[...document.querySelectorAll('span')].some(e => e.textContent.trim() === {json.dumps(tag)})"
    assert page.js(shown), f"no tag {tag!r} on the run page"


def assert_run_page_lists_checkpoints(page: Page, expected: list[str], shot: Path) -> None:
    """The run's page shows exactly the checkpoints the run retains (its own records): files in
    the Artifacts tab's hype_checkpoints folder, collapsed until clicked."""
    page.click(leaf("Artifacts"), "the run page's Artifacts tab")
    page.click(f"document.querySelector('{TREE_NODE}[artifact-name=\"{layout.CHECKPOINT_FOLDER}\"]')",
               "the checkpoint folder")
    deadline, listed, before = time.monotonic() + 20, [], None
    while time.monotonic() < deadline:  # until the folder's opening animation has ended
        listed, boxes = listed_checkpoints(page)
        if sorted(listed) == sorted(expected) and boxes == before:
            break
        before = boxes
        time.sleep(0.2)
    page.screenshot(shot)
    assert sorted(listed) == sorted(expected), f"the UI shows {listed}, the run retains {expected} ({shot})"


def open_run(page: Page, ui, shot: Path) -> None:
    page.click(anchor(RUN_NAME), f"run {RUN_NAME} in the runs table")
    page.wait_for(f"[...document.querySelectorAll('h2')].some(h => h.textContent.trim() === "
                  f"{json.dumps(RUN_NAME)})", "the run's page", shot=shot)
    assert route(page) == f"/experiments/{ui.experiment_id}/runs/{ui.run_id}"


def test_printed_link_opens_the_training_runs_then_the_run_and_its_checkpoints(ui, tmp_path):
    assert ui.link == layout.ui_link(ui.base, ui.experiment_id)
    assert "Model training" in ui.printed  # the hint about the sidebar switch
    epochs = retained_epochs(ui.uri, ui.run_id)
    best = int(MlflowClient(ui.uri).get_run(ui.run_id).data.tags[layout.TAG_BEST_EPOCH])
    out = shots(tmp_path)
    with Page(tmp_path / "profile", tmp_path / "chromium.log") as page:  # a fresh profile
        page.goto(ui.link)
        wait_for_runs_view(page, ui, tmp_path / "not-runs.png")
        close_assistant(page)
        page.screenshot(out / "ui-runs.png")

        # The run's link in the table drops workflowType: its page is in the GenAI view again.
        # Choosing "Model training" in the sidebar switch there is kept (the printed hint) ...
        open_run(page, ui, tmp_path / "no-run.png")
        page.click(leaf("Model training"), "the sidebar's Model training switch")
        wait_for_runs_view(page, ui, tmp_path / "switch-not-runs.png")
        assert page.js("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'

        # ... so that the run's page, and the home page, keep to the model-training view.
        open_run(page, ui, tmp_path / "no-run-2.png")
        assert not page.js("!!document.querySelector('a[href*=\"/judges\"]')"), "a GenAI sidebar"
        page.screenshot(out / "ui-run.png")
        assert_run_overview_lists_checkpoint_models(page, epochs, best)
        files = [f"{layout.CHECKPOINT_FOLDER}/{checkpoint_model(e)}.pth" for e in epochs]
        assert_run_page_lists_checkpoints(page, files, out / "ui-checkpoints.png")
        page.goto(f"{ui.base}/")
        page.click(anchor("hype"), "experiment hype on the home page")
        wait_for_runs_view(page, ui, tmp_path / "home-not-runs.png")


def test_fresh_profile_home_page_opens_mlflow_3_17s_genai_view(ui, tmp_path):
    """Why hype prints links: the experiment's kind tag alone does not lead to the runs. When this
    fails, MLflow honours mlflow.experimentKind: drop the workflowType links and the hint."""
    client = MlflowClient(ui.base)
    assert client.get_experiment(ui.experiment_id).tags[layout.EXPERIMENT_KIND_TAG] == layout.EXPERIMENT_KIND
    with Page(tmp_path / "profile", tmp_path / "chromium.log") as page:
        page.goto(f"{ui.base}/")
        page.click(anchor("hype"), "experiment hype on the home page")
        page.wait_for(f"/^#\\/experiments\\/{ui.experiment_id}\\/[a-z]/.test(location.hash)",
                      "the experiment's first view", shot=tmp_path / "home.png")
        landed = route(page)
        page.screenshot(tmp_path / "landed.png")
    assert landed.startswith(f"/experiments/{ui.experiment_id}/overview"), (
        f"a fresh profile now lands on {landed}: MLflow follows the kind tag ({tmp_path / 'landed.png'})")


def models_table(page: Page, metric: str) -> list[dict]:
    """The experiment's Models table (an ag-grid; Model name pinned left, then attributes, then a
    column per metric) as a person sees it: each row's model name and `metric` cell text, and
    whether both are in view (hit at their centre, the metric's cell whole inside the scrolled
    part). The grid renders only the columns near its scroll position: the metric's may be absent."""
    return page.js(f"""(() => {{
        const header = [...document.querySelectorAll('.ag-header-cell')]
            .find(h => h.textContent.trim() === {json.dumps(metric)});
        const col = header ? header.getAttribute('aria-colindex') : null;  // its cells' col-id is escaped
        const part = document.querySelector('.ag-center-cols-viewport')?.getBoundingClientRect();
        const seen = n => {{
            const r = n.getBoundingClientRect();
            const hit = r.height > 0 && document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
            return Boolean(hit) && n.contains(hit);
        }};
        const whole = n => {{
            const r = n.getBoundingClientRect();
            return r.left >= part.left && r.right <= part.right;
        }};
        const rows = {{}};
        for (const cell of document.querySelectorAll('.ag-row[row-index] [col-id]')) {{
            const index = cell.closest('.ag-row').getAttribute('row-index');
            const row = rows[index] ??= {{name: null, value: null}};
            if (cell.getAttribute('col-id') === 'name') {{
                row.name = cell.querySelector('a')?.textContent.trim() ?? null;
                row.name_seen = seen(cell);
            }} else if (col && cell.getAttribute('aria-colindex') === col) {{
                row.value = cell.textContent.trim();
                row.value_seen = seen(cell) && whole(cell);
            }}
        }}
        return Object.values(rows).filter(r => r.name !== null);
    }})()""")


def wait_for_models(page: Page, names: list[str], shot: Path, timeout_s: float = 30.0) -> list[dict]:
    """The Models table once it lists exactly `names` (in any order)."""
    deadline, rows = time.monotonic() + timeout_s, []
    while time.monotonic() < deadline:
        rows = models_table(page, MONITOR)
        if sorted(r["name"] for r in rows) == sorted(names):
            return rows
        time.sleep(0.2)
    page.screenshot(shot)
    listed = [r["name"] for r in rows]
    raise AssertionError(f"the Models table lists {listed}, expected {sorted(names)} ({shot})")


def swipe_to_column(page: Page, metric: str, shot: Path) -> list[dict]:
    """Swipe the table sideways, as a person does, until the metric's column is wholly in view."""
    for _ in range(40):
        rows = models_table(page, metric)
        if rows and all(r.get("value_seen") and r["name_seen"] for r in rows):
            return rows
        page.wheel("document.querySelector('.ag-center-cols-viewport')", "the Models table", dx=SWIPE_PX)
        time.sleep(0.2)
    page.screenshot(shot)
    raise AssertionError(f"no {metric} column in view after 40 swipes of the Models table ({shot})")


def metric(model, key: str) -> float:
    return next(m.value for m in model.metrics if m.key == key)


def test_printed_link_reaches_the_checkpoint_models_and_cleanup_removes_them(ui, tmp_path):
    """Issue 12: from the printed link, at most 3 clicks to a table of the run's checkpoints with
    their metrics: the sidebar's Models, the experiment's LoggedModels, one per retained
    checkpoint, with a column per metric (map among them: every epoch is evaluated here). Then
    `cli.py cleanup` deletes checkpoints, and with them their rows.

    MLflow 3.17 shows a LoggedModel's tags nowhere (not in the table, not on the model's page), so
    the tag hype.best is not on screen: the best model is the one whose map is the column's
    highest, its page's description says it is the best, and the run page's tags name its epoch
    (the test above)."""
    epochs = retained_epochs(ui.uri, ui.run_id)
    models = checkpoint_models(ui)
    assert sorted(models) == [checkpoint_model(e) for e in epochs]  # the store agrees with the run
    best = [name for name, m in models.items() if m.tags.get(BEST_TAG) == "true"]
    assert len(best) == 1, {name: m.tags.get(BEST_TAG) for name, m in models.items()}
    maps = {name: metric(m, MONITOR) for name, m in models.items()}
    assert max(maps, key=maps.get) == best[0]  # monitor map, mode max

    out = shots(tmp_path)
    with Page(tmp_path / "profile", tmp_path / "chromium.log") as page:  # a new user's browser
        page.goto(ui.link)  # pasted, not clicked
        wait_for_runs_view(page, ui, tmp_path / "not-runs.png")
        close_assistant(page)  # it covers the table's right half: a click too
        page.click(anchor("Models"), "the sidebar's Models")
        wait_for_models(page, [*models, FINAL_MODEL], tmp_path / "models.png")
        assert route(page) == f"/experiments/{ui.experiment_id}/models"
        rows = swipe_to_column(page, MONITOR, tmp_path / "no-map.png")  # a swipe is no click
        assert page.clicks <= MAX_CLICKS, f"{page.clicks} clicks from the printed link to the table"
        page.screenshot(out / "ui-models.png")
        shown = {r["name"]: float(r["value"]) for r in rows if r["name"] != FINAL_MODEL}
        assert shown == pytest.approx(maps, rel=1e-12), shown
        assert max(shown, key=shown.get) == best[0]  # the best, as a person tells it here
        models_url = page.url()

        # The best model's page: its metrics, and (3.17) none of its tags.
        page.click(anchor(best[0]), f"model {best[0]} in the table")
        title = f"[...document.querySelectorAll('h2')].some(h => h.textContent.startsWith({best[0]!r}))"
        page.wait_for(title, f"the page of model {best[0]}", shot=tmp_path / "no-model.png")
        assert route(page) == f"/experiments/{ui.experiment_id}/models/{models[best[0]].model_id}"
        cells = page.wait_for(
            "[...document.querySelectorAll('[role=row]')].map(r => [...r.querySelectorAll('[role=cell]')]"
            f".map(c => c.textContent.trim())).find(c => c[0] === {json.dumps(MONITOR)})",
            f"the {MONITOR} row of the model's metrics", shot=tmp_path / "no-model-map.png")
        assert float(cells[-1]) == pytest.approx(maps[best[0]], rel=1e-12)
        text = page.js("document.body.innerText")
        assert "Best checkpoint of its run" in text  # its description (mlflow.note.content) marks it
        assert BEST_TAG not in text, (
            "MLflow now shows a LoggedModel's tags: assert hype.best: true here, and in the table if shown")
        page.screenshot(tmp_path / "model.png")

        # `cli.py cleanup` deletes all checkpoints but the newest: their models go from the table.
        # In this process (a subprocess spends seconds importing mlflow and torch again), in an
        # environment of its own: what the command sets there ends with it.
        with mock.patch.dict(os.environ, environ_without_mlflow(), clear=True):
            done = CliRunner().invoke(cli, ["cleanup", "--run-id", ui.run_id, "--keep", "1", "--keep-best",
                                            "0", "--tracking-uri", ui.uri])
        assert done.exit_code == 0, f"{done.output}{done.exception!r}"
        left = retained_epochs(ui.uri, ui.run_id)
        assert left == epochs[-1:]
        page.goto(models_url)  # the same page: a new hash, no new load ...
        page.wait_for(f"location.href === {json.dumps(models_url)}", "the Models table's address")
        page.reload()  # ... so load it again, as a person presses F5
        rows = wait_for_models(page, [checkpoint_model(left[0]), FINAL_MODEL], tmp_path / "after-cleanup.png")
        page.screenshot(tmp_path / "models-after-cleanup.png")
    gone = sorted(set(models) - {r["name"] for r in rows})
    assert gone == [checkpoint_model(e) for e in epochs[:-1]]
    assert sorted(checkpoint_models(ui)) == [checkpoint_model(left[0])]
