"""The installed `smallcap` console script, run as a user runs it."""
import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

EXE = shutil.which('smallcap') or str(Path(sys.executable).with_name('smallcap'))


def sc(*args, env=None, cwd=None):
    return subprocess.run([EXE, *args], capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=120)


def test_help_lists_commands():
    r = sc('--help')
    assert r.returncode == 0
    assert 'Usage: smallcap' in r.stdout and 'demo' in r.stdout and 'config' in r.stdout


def test_version_matches_settings_ini_and_metadata():
    cfg = configparser.ConfigParser(); cfg.read(ROOT / 'settings.ini')
    from importlib.metadata import version
    want = cfg['DEFAULT']['version']
    assert sc('--version').stdout.strip() == f"smallcap, version {want}"
    assert version('smallcap') == want


def test_unknown_command_fails():
    r = sc('no-such-command')
    assert r.returncode == 2 and 'No such command' in r.stderr


# `smallcap demo` itself (the whole loop, its reuse and its report in a browser) is tests/test_demo.py


def test_config_never_prints_secrets(tmp_path):
    secret = 'cli-secret-value-5b1e'
    r = sc('config', '--json', env={'APCA_API_SECRET_KEY': secret, 'TELEGRAM_BOT_TOKEN': secret}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d['alpaca_secret_key'] == 'set' and d['telegram_bot_token'] == 'set' and d['alpaca_key_id'] == 'not set'
    assert secret not in r.stdout + r.stderr


def test_config_error_is_clean(tmp_path):
    (tmp_path / 'smallcap.yaml').write_text('alpaca_secret_key: in-a-file\n')
    r = sc('config', cwd=tmp_path)
    assert r.returncode == 1
    assert 'secrets are read from environment' in r.stderr and 'Traceback' not in r.stderr and 'in-a-file' not in r.stderr
