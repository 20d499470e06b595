"""Real-browser check of the notebooks' widgets: JupyterLab driven by Playwright in Debian's chromium.

A temporary copy of ``03_merging`` and ``05_head_realignment`` (smoke profile, a temporary
``run_dir``, a cold scene cache) is served by this venv's JupyterLab; for each notebook the test
opens it in the browser, runs every cell through Lab's own command ``notebook:run-all-cells``
(the "Run > Run All Cells" menu item), waits until every code cell has run without an error, then:

- 03: the merge explorer (an α slider, a method dropdown, task checkboxes and an Output) renders;
  two ArrowRight presses on the focused slider handle move α by two steps, and the Output, redrawn
  by the kernel, then shows the new α and a new figure; the dropdown switches the method to TIES and
  the Output follows;
- 05: the budget widget (``interact_manual``: two sliders and a "Run Interact" button) renders; a
  click computes the validation Δm at the default budget (never the test split) and draws the history
  of tries, ArrowLeft on the "val images" slider then a second click recomputes it on one image fewer,
  as the Output's text shows ("try 2"), with the history figure redrawn and no echoed return value.

The kernel runs without ``CI`` / ``SIMO_LITE_QUIET`` (both turn the widgets off, like progress bars).
Screenshots go to the test's tmp dir and are copied to ``runs/ui/``; their paths are printed.

Needs ``/usr/bin/chromium`` (Debian's package) and the ``playwright`` Python package, never
Playwright's downloaded browsers; skipped otherwise. ``make test-ui`` installs both and runs it.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = ("03_merging.ipynb", "05_head_realignment.ipynb")
SHOTS = REPO / "runs" / "ui"
RUN_ALL_TIMEOUT_S = 420            # per notebook: smoke runs take well under a minute under papermill
WIDGET_TIMEOUT_S = 120             # one kernel round trip (a merge + a val evaluation, or a head realignment)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:                # pragma: no cover - depends on the environment
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)),
                       reason=f"real-browser UI test needs Debian's chromium at {CHROMIUM} "
                              "(`make test-ui` installs it with apt-get)"),
    pytest.mark.skipif(sync_playwright is None,
                       reason="real-browser UI test needs the playwright Python package "
                              "(`make test-ui`, or pip install -e '.[dev]'); no browser download is used"),
]


# -- the notebooks and the server -----------------------------------------------------------------

def _copy_notebook(name: str, dest: Path, run_dir: Path) -> None:
    """notebooks/<name> -> dest/<name>, outputs cleared, parameters: smoke profile, ``run_dir``."""
    nb = nbformat.read(REPO / "notebooks" / name, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{name}: expected one cell tagged 'parameters'"
    src = cells[0].source
    for key, value in (("profile", "smoke"), ("run_dir", str(run_dir)), ("show_progress", True)):
        src, n = re.subn(rf"^{key}\s*=.*$", f"{key} = {value!r}", src, count=1, flags=re.M)
        assert n == 1, f"{name}: no `{key} = ...` line in the parameters cell"
    cells[0].source = src
    for c in nb.cells:
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.write(nb, dest / name)


def _write_lab_settings(settings: Path) -> None:
    """User settings: every cell in the DOM (no windowing), no news prompt."""
    files = {"@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
             "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false",
                                                                                  "checkForUpdates": False}}
    for rel, value in files.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(json.dumps(value))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on a temporary copy of the two notebooks: yields (base URL, token, tmp root)."""
    root = tmp_path_factory.mktemp("ui")
    nb_dir, run_dir, settings = root / "notebooks", root / "run", root / "lab-settings"
    for d in (nb_dir, run_dir, settings):
        d.mkdir()
    for name in NOTEBOOKS:
        _copy_notebook(name, nb_dir, run_dir)
    _write_lab_settings(settings)

    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SIMO_LITE_QUIET")}   # widgets on
    env.update(SIMO_LITE_CACHE=str(root / "cache"), OMP_NUM_THREADS="1",   # tiny smoke tensors: 1 thread
               JUPYTER_RUNTIME_DIR=str(root / "runtime"), JUPYTER_CONFIG_DIR=str(root / "jupyter-config"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(root / "workspaces"),
               IPYTHONDIR=str(root / "ipython"))
    cmd = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={nb_dir}", "--no-browser",
           "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", "--LabApp.expose_app_in_browser=True",
           # offline, as `make lab`: no update checks, no extension index queries
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log_path = root / "lab.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                req = urllib.request.Request(f"{base}/api/status", headers={"Authorization": f"token {token}"})
                with urllib.request.urlopen(req, timeout=5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield base, token, root
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser_context(lab):
    _, _, root = lab
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(root / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000})
        try:
            yield context
        finally:
            context.close()


# -- driving Lab ----------------------------------------------------------------------------------

_NOTEBOOK_STATE = """(path) => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.context || panel.context.path !== path || !panel.content.model) return null;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  const cells = panel.content.model.cells;
  let code = 0, done = 0;
  const errors = [];
  for (let i = 0; i < cells.length; i++) {
    const cell = cells.get(i);
    if (cell.type !== 'code') continue;
    code += 1;
    if (cell.executionCount !== null && cell.executionCount !== undefined) done += 1;
    for (const out of cell.outputs.toJSON())
      if (out.output_type === 'error') errors.push(`cell ${i}: ${out.ename}: ${out.evalue}`);
  }
  const busy = [...panel.node.querySelectorAll('.jp-InputPrompt')]
    .filter(e => e.textContent.includes('*')).length;
  return {kernel: kernel ? kernel.status : 'none', code, done, busy, errors};
}"""


def _open_and_run_all(page, base: str, token: str, name: str) -> dict:
    """Open ``name`` in Lab, wait for its kernel, Run All Cells, wait until every code cell has run."""
    page.goto(f"{base}/lab/tree/{name}?reset&token={token}")
    page.wait_for_function("(path) => { const s = (" + _NOTEBOOK_STATE + ")(path); return s && s.kernel === 'idle'; }",
                           arg=name, timeout=180_000)
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    t0, state = time.monotonic(), None
    while time.monotonic() - t0 < RUN_ALL_TIMEOUT_S:
        state = page.evaluate(_NOTEBOOK_STATE, name)
        assert state is not None, f"{name} is no longer the current Lab widget"
        assert not state["errors"], f"{name}: cells raised: {state['errors']}"
        if state["done"] == state["code"] and state["busy"] == 0 and state["kernel"] == "idle":
            return {**state, "run_all_s": round(time.monotonic() - t0, 1)}
        time.sleep(1.0)
    pytest.fail(f"{name}: Run All Cells did not finish in {RUN_ALL_TIMEOUT_S} s: {state}")


def _shot(target, tmp_path: Path, name: str, shots: list) -> None:
    path = tmp_path / f"{name}.png"
    target.screenshot(path=str(path))
    SHOTS.mkdir(parents=True, exist_ok=True)
    copy = SHOTS / path.name
    shutil.copyfile(path, copy)
    shots.append(copy)
    print(f"screenshot: {copy}  (also {path})")


def _readout(slider) -> str:
    return slider.locator(".widget-readout").inner_text().strip()


def _press_on_handle(slider, key: str, times: int = 1) -> None:
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    for _ in range(times):
        handle.press(key)


def _loaded_image(page, output, previous: str = "") -> str:
    """Wait until ``output`` holds one fully decoded image other than ``previous``; its src."""
    page.wait_for_function(
        """([el, prev]) => { const imgs = el.querySelectorAll('img');
             return imgs.length === 1 && imgs[0].complete && imgs[0].naturalWidth > 0 && imgs[0].src !== prev; }""",
        arg=[output.element_handle(), previous], timeout=WIDGET_TIMEOUT_S * 1000)
    img = output.locator("img").first
    # decoded and painted (two frames) before any screenshot: software raster can lag behind `complete`
    img.evaluate("async (el) => { await el.decode(); "
                 "await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))); }")
    page.wait_for_timeout(300)
    return img.get_attribute("src")


def _clear_old_shots(prefix: str) -> None:
    for old in SHOTS.glob(f"{prefix}_*.png"):        # never show the lead a stale picture
        old.unlink()


# -- the tests ------------------------------------------------------------------------------------

def test_merge_explorer_in_jupyterlab(lab, browser_context, tmp_path):
    base, token, _ = lab
    page = browser_context.new_page()
    shots: list[Path] = []
    _clear_old_shots("03")
    state = _open_and_run_all(page, base, token, "03_merging.ipynb")
    print(f"03_merging: {state['code']} code cells run in {state['run_all_s']} s")

    explorer = page.locator(".jp-OutputArea-output .widget-vbox").filter(has=page.locator(".widget-slider")).first
    expect(explorer).to_be_visible(timeout=30_000)
    slider = explorer.locator(".widget-slider").first
    dropdown = explorer.locator(".widget-dropdown select").first
    output = explorer.locator(".widget-output").first
    expect(slider).to_contain_text("alpha")
    expect(output).to_contain_text("alpha", timeout=WIDGET_TIMEOUT_S * 1000)     # on_change() at display time
    img0 = _loaded_image(page, output)
    assert explorer.locator(".widget-checkbox").count() >= 2, "one checkbox per task"
    explorer.scroll_into_view_if_needed()
    _shot(page, tmp_path, "03_explorer_rendered", shots)

    alpha0 = float(_readout(slider))
    method0 = dropdown.input_value()
    assert f"{method0}, alpha {alpha0:.2f}" in output.inner_text(), output.inner_text()
    _press_on_handle(slider, "ArrowRight", times=2)                           # two steps of 0.05
    alpha1 = round(alpha0 + 0.10, 2)
    expect(slider.locator(".widget-readout")).to_have_text(f"{alpha1:.2f}")
    expect(output).to_contain_text(f"{method0}, alpha {alpha1:.2f}", timeout=WIDGET_TIMEOUT_S * 1000)
    img1 = _loaded_image(page, output, img0)                                  # a new figure, drawn by the kernel
    explorer.scroll_into_view_if_needed()
    _shot(page, tmp_path, "03_explorer_alpha_moved", shots)
    _shot(explorer, tmp_path, "03_explorer_alpha_moved_widget", shots)

    other = "ties" if method0 != "ties" else "ta"
    dropdown.select_option(other)
    expect(output).to_contain_text(f"{other}, alpha {alpha1:.2f}", timeout=WIDGET_TIMEOUT_S * 1000)
    _loaded_image(page, output, img1)
    _shot(explorer, tmp_path, "03_explorer_method_changed_widget", shots)
    assert all(p.stat().st_size > 0 for p in shots)
    page.close()


def test_budget_slider_in_jupyterlab(lab, browser_context, tmp_path):
    base, token, _ = lab
    page = browser_context.new_page()
    shots: list[Path] = []
    _clear_old_shots("05")
    state = _open_and_run_all(page, base, token, "05_head_realignment.ipynb")
    print(f"05_head_realignment: {state['code']} code cells run in {state['run_all_s']} s")

    budget = page.locator(".jp-OutputArea-output .widget-interact").first
    expect(budget).to_be_visible(timeout=30_000)
    samples = budget.locator(".widget-slider").filter(has_text="val images").first
    steps = budget.locator(".widget-slider").filter(has_text="steps/head").first
    button = budget.get_by_role("button", name="Run Interact")
    output = budget.locator(".widget-output").first
    expect(samples).to_be_visible()
    expect(steps).to_be_visible()
    budget.scroll_into_view_if_needed()
    _shot(page, tmp_path, "05_budget_rendered", shots)

    n0, s0 = int(_readout(samples)), int(_readout(steps))
    button.click()                                                            # interact_manual: runs on click
    expect(output).to_contain_text(f"{n0} val images, {s0} steps per head", timeout=WIDGET_TIMEOUT_S * 1000)
    first = output.inner_text()
    assert "try 1:" in first and "validation Δm" in first and "test Δm" not in first, first
    expect(output.locator("img").first).to_be_visible(timeout=WIDGET_TIMEOUT_S * 1000)   # the history figure
    assert not any(re.fullmatch(r"-?\d+(\.\d+)?(e-?\d+)?", line.strip()) for line in first.splitlines()), first

    _press_on_handle(samples, "ArrowLeft")                                    # one image fewer (starts at max)
    expect(samples.locator(".widget-readout")).to_have_text(str(n0 - 1))
    button.click()
    expect(output).to_contain_text(f"{n0 - 1} val images, {s0} steps per head", timeout=WIDGET_TIMEOUT_S * 1000)
    second = output.inner_text()
    assert f"{n0} val images" not in second, second                          # replaced, not appended
    assert "try 2:" in second and "validation Δm" in second, second          # the history keeps counting
    expect(output.locator("img").first).to_be_visible()
    budget.scroll_into_view_if_needed()
    _shot(page, tmp_path, "05_budget_moved", shots)
    _shot(budget, tmp_path, "05_budget_moved_widget", shots)
    assert all(p.stat().st_size > 0 for p in shots)
    page.close()
