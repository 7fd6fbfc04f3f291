"""The TripletInspector in a real JupyterLab, driven by Chromium through Playwright.

Starts JupyterLab on 127.0.0.1 with a random token in a temporary root that
holds one notebook, runs it from the Run menu, clicks "Real" and types "b"
into the shortcut box, and checks the label file; then presses the
notebook's "Retrain" button (labels -> :func:`astrid.braai.apply_labels` ->
:func:`astrid.braai.fine_tune` of a small untrained VGG6, one epoch) and
checks that the fine-tuned card names the two labels. Skipped when Chromium or
Playwright is missing (install both with ``scripts/install_browser.sh``),
except under ``CI=true``, where that is a failure.

``ASTRID_UPDATE_SCREENSHOTS=1`` also copies the widget's screenshot to
``docs/img/triplet_inspector.png`` (the one the documentation shows).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

CHROMIUM = Path(os.environ.get("ASTRID_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-quic",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "triplet_inspector.png"
NOTEBOOK_CODE = """\
import numpy as np
from astrid.schema import new_triplet_dataset
from astrid.widgets import TripletInspector

# Eight synthetic candidates: a star-like source on sky in science and difference.
rng = np.random.default_rng(7)
n = 8
yy, xx = np.mgrid[:63, :63]
source = np.exp(-((xx - 31) ** 2 + (yy - 31) ** 2) / (2 * 2.2**2))
flux = rng.uniform(20, 80, n)
stamps = rng.normal(0, 2, (n, 63, 63, 3)).astype("float32")
stamps[..., 0] += 200 + flux[:, None, None] * source
stamps[..., 1] += 200
stamps[..., 2] += flux[:, None, None] * source
stamps[3, :18] = np.nan  # a cut-out at the image edge
ds = new_triplet_dataset(stamps, coords={
    "candidate_id": [f"c{i:02d}" for i in range(n)],
    "mag": 25 - 2.5 * np.log10(flux * 2 * np.pi * 2.2**2),
    "fwhm": rng.uniform(2.2, 3.4, n),
})
inspector = TripletInspector(ds, scores=rng.uniform(0, 1, n), labels_path=LABELS_PATH, labeller="browser test")
inspector"""
# The notebook flow of notebooks/08_active_learning.ipynb, on the tiny set: labels -> apply -> fine-tune.
RETRAIN_CODE = """\
import ipywidgets as widgets
from astrid import braai

retrain_status = widgets.HTML("not retrained")


def retrain(_button=None):
    merged = braai.apply_labels(ds, LABELS_PATH)
    result = braai.fine_tune(braai.vgg6(), merged, config=braai.TrainConfig(epochs=1, split=None), track=False)
    labels = result.card["provenance"]["labels"]
    retrain_status.value = (f"fine-tuned on {labels['n']} labels ({labels['n_real']} real) "
                            f"by {','.join(labels['labellers'])}")


retrain_button = widgets.Button(description="Retrain")
retrain_button.on_click(retrain)
widgets.VBox([retrain_button, retrain_status])"""


def _unavailable(reason: str):
    if os.environ.get("CI", "").strip().lower() in ("true", "1", "yes"):
        pytest.fail(
            f"{reason}; CI must run the browser test (scripts/install_browser.sh installs it)"
        )
    pytest.skip(f"{reason}; run scripts/install_browser.sh to enable the browser test")


@pytest.fixture
def playwright_api():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the 'playwright' Python package is not installed")
    if not CHROMIUM.is_file():
        _unavailable(f"Chromium is not installed at {CHROMIUM}")
    try:
        import jupyterlab  # noqa: F401
        import jupyterlab_widgets  # noqa: F401
    except ImportError:
        _unavailable("jupyterlab and ipywidgets (astrid[notebooks]) are not installed")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_notebook(path: Path, labels_path: Path) -> None:
    import nbformat

    book = nbformat.v4.new_notebook()
    book.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3 (ipykernel)",
        "language": "python",
    }
    book.cells = [
        nbformat.v4.new_code_cell(f"LABELS_PATH = {str(labels_path)!r}\n" + NOTEBOOK_CODE),
        nbformat.v4.new_code_cell(RETRAIN_CODE),
    ]
    nbformat.write(book, path)


def _write_lab_settings(settings_dir: Path) -> None:
    """Start the notebook's kernel without a dialog, and no news prompt over the widget."""
    settings = {
        "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {
            "autoStartDefaultKernel": True
        },
        "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    }
    for name, values in settings.items():
        path = settings_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))


@pytest.fixture
def jupyterlab_server(tmp_path):
    """JupyterLab on a free local port, isolated from the user's Jupyter settings."""
    root = tmp_path / "root"
    root.mkdir()
    labels_path = tmp_path / "labels" / "inspect.jsonl"
    _write_notebook(root / "inspect.ipynb", labels_path)
    env = dict(os.environ)
    for name in (
        "JUPYTER_CONFIG_DIR",
        "JUPYTER_DATA_DIR",
        "JUPYTER_RUNTIME_DIR",
        "JUPYTERLAB_SETTINGS_DIR",
        "JUPYTERLAB_WORKSPACES_DIR",
    ):
        env[name] = str(tmp_path / name.lower())
        Path(env[name]).mkdir()
    _write_lab_settings(Path(env["JUPYTERLAB_SETTINGS_DIR"]))
    port, token = _free_port(), secrets.token_hex(16)
    log_path = tmp_path / "jupyterlab.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--allow-root",
                "--ServerApp.ip=127.0.0.1",
                f"--port={port}",
                f"--IdentityProvider.token={token}",
                "--ServerApp.open_browser=False",
                f"--ServerApp.root_dir={root}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"JupyterLab exited with status {server.returncode}:\n{log_path.read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"JupyterLab did not answer within 60 s:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.25)
        yield {"base": base, "token": token, "labels_path": labels_path, "log": log_path}
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _read_labels(path: Path, n: int, timeout: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= n:
                return [json.loads(line) for line in lines]
        time.sleep(0.1)
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_label_buttons_in_jupyterlab_write_the_label_file(
    playwright_api, jupyterlab_server, tmp_path
):
    server = jupyterlab_server
    with playwright_api() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.goto(f"{server['base']}/lab/tree/inspect.ipynb?token={server['token']}&reset")
            # The kernel is ready when the status bar says so and the cell is on screen.
            page.locator(".jp-StatusBar-Widget", has_text=re.compile(r"\| Idle")).first.wait_for(
                timeout=60_000
            )
            page.locator(".jp-Notebook .jp-Cell .cm-content").first.wait_for(timeout=30_000)

            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
            real = page.get_by_role("button", name="Real", exact=True)
            try:
                real.wait_for(timeout=60_000)
            except Exception:
                page.screenshot(path=str(tmp_path / "failure.png"))
                raise AssertionError(
                    f"the widget did not appear (screenshot {tmp_path / 'failure.png'}); output: "
                    f"{page.locator('.jp-OutputArea').all_inner_texts()}; server log: {server['log']}"
                ) from None
            assert page.get_by_role("button", name="Bogus", exact=True).is_visible()
            assert page.get_by_role("button", name="Skip", exact=True).is_visible()

            real.click()
            labels = _read_labels(server["labels_path"], 1)
            assert [(r["candidate_id"], r["label"]) for r in labels] == [("c00", "real")]

            # The keyboard path without extra packages: a letter typed into the shortcut box.
            page.get_by_placeholder("keys: r b s, n p").fill("b")
            labels = _read_labels(server["labels_path"], 2)
            assert [(r["candidate_id"], r["label"]) for r in labels] == [
                ("c00", "real"),
                ("c01", "bogus"),
            ]
            page.get_by_text("1 real, 1 bogus labelled").wait_for(timeout=10_000)
            assert {r["labeller"] for r in labels} == {"browser test"}

            # Retrain: the labels just clicked, merged and fine-tuned on, named in the new card.
            page.get_by_role("button", name="Retrain", exact=True).click()
            page.get_by_text("fine-tuned on 2 labels (1 real) by browser test").wait_for(
                timeout=120_000
            )

            shot = tmp_path / "triplet_inspector.png"
            page.locator(".astrid-triplet-inspector").screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("ASTRID_UPDATE_SCREENSHOTS") == "1":
                SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(shot, SCREENSHOT)
        finally:
            browser.close()
