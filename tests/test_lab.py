"""`make lab`: the project's kernel is registered in the venv and JupyterLab serves the notebooks.

Starts the real Makefile target headless (no browser, a free port, a random token), waits for the
server, and checks through its REST API that the ``simo_lite`` kernel spec exists, runs this venv's
Python, and that the notebooks folder is what the server shows.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
VENV_PY = REPO / ".venv" / "bin" / "python"

pytestmark = pytest.mark.skipif(not VENV_PY.exists() or shutil.which("make") is None,
                                reason="needs the project's .venv (make venv) and make")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, token: str):
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def test_make_lab_starts_jupyterlab_with_the_project_kernel(tmp_path):
    port, token = _free_port(), secrets.token_hex(16)
    args = (f"--no-browser --ServerApp.ip=127.0.0.1 --ServerApp.port={port} --ServerApp.port_retries=0 "
            f"--IdentityProvider.token={token}")
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg")}
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS={args}"], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline, status = time.monotonic() + 90, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = _get(f"{base}/api/status", token)
                break
            except OSError:
                time.sleep(0.5)
        assert status is not None, f"JupyterLab did not answer: {(tmp_path / 'lab.log').read_text()[-2000:]}"
        specs = _get(f"{base}/api/kernelspecs", token)["kernelspecs"]
        assert "simo_lite" in specs, sorted(specs)
        spec = specs["simo_lite"]["spec"]
        assert spec["display_name"] == "Python (simo_lite)"
        assert Path(spec["argv"][0]).resolve() == VENV_PY.resolve()      # the project's venv, not the system
        listing = {c["name"] for c in _get(f"{base}/api/contents", token)["content"]}
        assert "03_merging.ipynb" in listing
        with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10) as r:     # the Lab page itself
            assert r.status == 200 and b"JupyterLab" in r.read()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def test_make_lab_refuses_a_missing_folder():
    res = subprocess.run(["make", "-s", "lab", "LAB_DIR=notebooks/no-such-folder"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode != 0
    assert "notebooks/no-such-folder does not exist" in res.stdout + res.stderr
