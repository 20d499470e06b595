"""``course.interactive_kernel()``: widgets only where a person can use them, whatever ``show_progress``.

True in a kernel whose front end sends ``allow_stdin=True`` (JupyterLab, Notebook, VS Code); False under
papermill / nbclient (``allow_stdin=False``), with ``CI`` or ``SIMO_LITE_QUIET`` set, and outside a kernel.
"""
from __future__ import annotations

import IPython
import pytest

from simo_lite import course, progress


class _Kernel:
    def __init__(self, allow_stdin: bool):
        self.allow_stdin = allow_stdin

    def get_parent(self, channel=None):
        return {"header": {"msg_type": "execute_request"}, "content": {"code": "", "allow_stdin": self.allow_stdin}}


class _Shell:
    def __init__(self, kernel):
        self.kernel = kernel


@pytest.fixture
def clean_env(monkeypatch):
    for v in progress.QUIET_VARIABLES:
        monkeypatch.delenv(v, raising=False)
    return monkeypatch


def test_a_front_end_kernel_is_interactive(clean_env):
    clean_env.setattr(IPython, "get_ipython", lambda: _Shell(_Kernel(True)))
    assert course.interactive_kernel() is True


def test_papermill_and_nbclient_are_not(clean_env):
    clean_env.setattr(IPython, "get_ipython", lambda: _Shell(_Kernel(False)))      # what nbclient sends
    assert course.interactive_kernel() is False


@pytest.mark.parametrize("variable", progress.QUIET_VARIABLES)
def test_ci_and_quiet_runs_are_not(clean_env, variable):
    clean_env.setattr(IPython, "get_ipython", lambda: _Shell(_Kernel(True)))
    clean_env.setenv(variable, "1")
    assert course.interactive_kernel() is False


def test_outside_a_kernel_is_not(clean_env):
    clean_env.setattr(IPython, "get_ipython", lambda: None)                         # plain Python
    assert course.interactive_kernel() is False
    clean_env.setattr(IPython, "get_ipython", lambda: object())                     # terminal IPython: no kernel
    assert course.interactive_kernel() is False
