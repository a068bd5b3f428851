"""`python cli.py ui` in a real browser: headless chromium (Debian's; `.ci/run` installs it), a
fresh profile per test, driven over the DevTools protocol (tests/browser.py).

MLflow 3.17 ignores the experiment's kind tag when it picks a view: with nothing saved in the
browser it opens an experiment in its GenAI overview. So `cli.py ui` prints, for each hype
experiment, a link that says `workflowType=machine_learning`, and a hint about the sidebar switch
that makes a browser keep that choice. These tests open what it prints, as a person would, and
save screenshots to docs/. Chromium missing is a failure, never a skip.
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

import pytest
from mlflow.tracking import MlflowClient

from hype.config import TrainConfig
from hype.data import load_edge_csv
from tests.browser import Page, chromium_or_fail
from tests.datasets import write_tree_closure
from tests.servers import HOST, free_port
from tests.test_serving import started
from tracker import layout
from tracker.training.callbacks import TrackerConfig
from tracker.training.session import run_training

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MODEL = "tree"
RUN_NAME = "tree-keep-3"
VENV_BIN = Path(sys.executable).parent
TREE_NODE = "[data-testid=artifact-tree-node]"  # one file or folder of the artifact tree


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
    """A run of 6 epochs keeping 3 checkpoints, in experiment `hype` of a store of its own, and
    `cli.py ui` on it; its printed link to hype's training runs."""
    chromium_or_fail()  # before the training: a missing browser is said first
    root = tmp_path_factory.mktemp("ui-browser")
    shutil.copy(_migrated_sqlite_db, root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    graph = load_edge_csv(write_tree_closure(root / "tree_closure.csv", depth=2))
    config = TrainConfig(dim=2, epochs=6, burnin=1, eval_every=1, negs=4, lr=1.0)
    tconfig = TrackerConfig(model_name=MODEL, keep=3, checkpoint_root=root / "ckpt")
    out = run_training(uri=uri, graph=graph, config=config, tconfig=tconfig, experiment="hype",
                       run_name=RUN_NAME, progress=False)
    run = MlflowClient(uri).get_run(out.run_id)
    epochs = sorted(int(e) for e in run.data.tags[layout.TAG_RETAINED_EPOCHS].split(","))
    assert 3 <= len(epochs) <= 4 and epochs[-3:] == [4, 5, 6]  # the newest 3, and the best if older
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    log = root / "ui.log"
    cmd = [sys.executable, str(ROOT / "cli.py"), "ui", "--port", str(port), "--tracking-uri", uri]
    with started(cmd, env, log, f"http://{HOST}:{port}/health"):
        printed = log.read_text()
        link = re.search(r"training runs of 'hype': (\S+)", printed)
        assert link, f"cli.py ui printed no link to hype's training runs:\n{printed}"
        yield SimpleNamespace(
            base=f"http://{HOST}:{port}", link=link.group(1), printed=printed, root=root,
            experiment_id=out.experiment_id, run_id=out.run_id,
            checkpoints=[f"{layout.CHECKPOINT_FOLDER}/{MODEL}_epoch{e:04d}.pth" for e in epochs])


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


def assert_run_page_lists_checkpoints(page: Page, expected: list[str], shot: Path) -> None:
    """The run's page shows exactly the checkpoints the run retains (its own records).

    Today they are files in the Artifacts tab's hype_checkpoints folder, collapsed until clicked.
    (When each retained checkpoint becomes a LoggedModel, check the Models tab here as well.)
    """
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
    with Page(tmp_path / "profile", tmp_path / "chromium.log") as page:  # a fresh profile
        page.goto(ui.link)
        wait_for_runs_view(page, ui, tmp_path / "not-runs.png")
        close_assistant(page)
        page.screenshot(DOCS / "ui-runs.png")

        # The run's link in the table drops workflowType: its page is in the GenAI view again.
        # Choosing "Model training" in the sidebar switch there is kept (the printed hint) ...
        open_run(page, ui, tmp_path / "no-run.png")
        page.click(leaf("Model training"), "the sidebar's Model training switch")
        wait_for_runs_view(page, ui, tmp_path / "switch-not-runs.png")
        assert page.js("localStorage.getItem('mlflow.workflowType_v1')") == '"machine_learning"'

        # ... so that the run's page, and the home page, keep to the model-training view.
        open_run(page, ui, tmp_path / "no-run-2.png")
        assert not page.js("!!document.querySelector('a[href*=\"/judges\"]')"), "a GenAI sidebar"
        page.screenshot(DOCS / "ui-run.png")
        assert_run_page_lists_checkpoints(page, ui.checkpoints, DOCS / "ui-checkpoints.png")
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
