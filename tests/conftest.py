"""Shared fixtures: the repository root and a helper to run Python in a fresh process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# property tests judge results, never speed: the CI machine is shared and noisy, so no example has a deadline
settings.register_profile('smallcap', deadline=None)
settings.load_profile('smallcap')

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='session')
def root() -> Path:
    return ROOT


def run_py(code: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    "Run `code` in a fresh interpreter of this environment."
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=cwd or ROOT,
                          env={**os.environ, **(env or {})}, timeout=300)
