"""Shared test setup: an isolated scene cache, no progress bars, one intra-op thread.

Every test session renders into a fresh temporary cache (env ``SIMO_LITE_CACHE``), so tests never
read stale files from, nor write into, ``data/cache``. ``CI=1`` turns tqdm progress bars off.

The tests use tiny tensors, for which torch's intra-op thread pool is pure overhead; on a machine
whose cores are busy with other work, 2 OpenMP threads made the suite ~4x slower than 1 (spin-waiting
at barriers). Set ``SIMO_LITE_TEST_THREADS`` to use more. This only affects this pytest process.
"""
from __future__ import annotations

import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("SIMO_LITE_TEST_THREADS", "1")))


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache_and_quiet(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("SIMO_LITE_CACHE", str(tmp_path_factory.mktemp("simo_lite_cache")))
    mp.setenv("CI", "1")
    yield
    mp.undo()
