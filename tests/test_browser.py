"""In a real browser: JupyterLab runs 02_single_neuron, and moving the temperature slider redraws the figure.

Needs Debian's chromium (/usr/bin/chromium) and the playwright package; skips cleanly without them (CI
installs both). JupyterLab serves a copy of the notebook from a temporary folder on 127.0.0.1 with a token,
with its own config, data and workspace folders, so nothing of the checkout or the user's setup is touched.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_single_neuron.ipynb"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_START_S, RUN_ALL_S, REDRAW_S = 120, 240, 90

if not CHROMIUM.exists():
    pytest.skip(f"no chromium at {CHROMIUM}", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_server(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"JupyterLab exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(1)
    pytest.fail(f"JupyterLab did not answer within {SERVER_START_S} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def jupyterlab(tmp_path: Path):
    """A JupyterLab server on 127.0.0.1 serving a copy of 02_single_neuron; yields (base url, token)."""
    root = tmp_path / "root"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    for name, folder in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime")):
        env[name] = str(tmp_path / folder)
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab",
        "--no-browser",
        "--ServerApp.allow_root=True",  # CI runs as root
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
        f"--LabApp.user_settings_dir={tmp_path / 'settings'}",
        "--LabApp.news_url=",
        "--LabApp.expose_app_in_browser=True",
    ]
    with log.open("w") as sink:
        server = subprocess.Popen(command, cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_for_server(f"{base}/api/status?token={token}", server, log)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_temperature_slider_redraws_the_figure(jupyterlab, tmp_path: Path) -> None:
    base, token = jupyterlab
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(RUN_ALL_S * 1000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}")
            page.wait_for_function(
                "() => window.jupyterapp && window.jupyterapp.shell.currentWidget"
                " && window.jupyterapp.shell.currentWidget.sessionContext"
                " && window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'"
            )
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

            # The temperature widget is the slider labelled "temperature T"; its figure is in the same box.
            box = page.locator(".widget-vbox", has=page.locator(".widget-label", has_text="temperature T")).last
            image = box.locator(".widget-output img")
            image.wait_for(state="visible")
            page.screenshot(path=str(tmp_path / "before.png"))
            before = image.get_attribute("src")
            assert before and before.startswith("data:image/png;base64,")

            readout = box.locator(".widget-slider", has=page.locator(".widget-label", has_text="temperature T"))
            readout = readout.locator(".widget-readout")
            readout.click()
            page.keyboard.press("Control+A")
            page.keyboard.type("30")
            page.keyboard.press("Enter")

            page.wait_for_function(
                "([element, old]) => element.querySelector('.widget-output img')"
                " && element.querySelector('.widget-output img').src !== old",
                arg=[box.element_handle(), before],
                timeout=REDRAW_S * 1000,
            )
            after = image.get_attribute("src")
            page.screenshot(path=str(tmp_path / "after.png"))
            assert float(readout.inner_text()) == pytest.approx(30)
            assert after.startswith("data:image/png;base64,") and after != before
        finally:
            context.close()
