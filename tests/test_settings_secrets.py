"""A secret in the environment never shows: repr, str, logging, and the outputs of a papermill-run notebook."""
import json
import logging

import nbformat
import papermill as pm
import pytest

from smallcap.config import Settings

SECRET = 'sk-live-9d8c7b6a5f4e3d2c1b0a'


@pytest.fixture
def secret_env(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)                                    # no stray .env or smallcap.yaml
    for k in ('APCA_API_SECRET_KEY', 'SMALLCAP_ALPACA_KEY_ID', 'IB_ACCOUNT', 'TELEGRAM_BOT_TOKEN', 'SMALLCAP_CONFIG'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv('APCA_API_KEY_ID', 'AK' + SECRET)
    monkeypatch.setenv('APCA_API_SECRET_KEY', SECRET)
    monkeypatch.setenv('SMALLCAP_IB_ACCOUNT', 'U' + SECRET)
    monkeypatch.setenv('TELEGRAM_BOT_TOKEN', '42:' + SECRET)
    return tmp_path


def test_repr_str_and_logging(secret_env, caplog):
    s = Settings()
    assert s.alpaca_secret_key.get_secret_value() == SECRET and s.has_alpaca
    log = logging.getLogger('smallcap.test')
    with caplog.at_level(logging.DEBUG):
        log.info('settings %s', s); log.info('settings %r', s); log.info(s); log.info(s.alpaca_secret_key)
        log.info('dump %s', s.model_dump()); log.info('describe %s', s.describe())
    texts = [repr(s), str(s), format(s), s.model_dump_json(), json.dumps(s.describe()), caplog.text]
    assert all(SECRET not in t for t in texts)
    assert len(caplog.records) == 6 and '**********' in caplog.text   # the log lines were written


def test_dotenv_is_read_and_masked(secret_env, monkeypatch):
    monkeypatch.delenv('APCA_API_SECRET_KEY')
    (secret_env / '.env').write_text(f"APCA_API_SECRET_KEY={SECRET}-from-dotenv\n")
    s = Settings()
    assert s.alpaca_secret_key.get_secret_value() == f"{SECRET}-from-dotenv"
    assert SECRET not in repr(s) + str(s)


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("label = 'default'")
    params.metadata['tags'] = ['parameters']
    nb.cells = [params] + [nbformat.v4.new_code_cell(src) for src in [
        "import os, logging, sys\nfrom smallcap.config import Settings\ns = Settings()\n"
        "assert s.alpaca_secret_key.get_secret_value() == os.environ['APCA_API_SECRET_KEY'], 'kernel did not see the secret'",
        "s",                                                     # rich display / repr
        "print(s); print(str(s.alpaca_secret_key)); print(s.model_dump())",
        "logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True)\nlogging.getLogger('smallcap').info('loaded %s', s)",
        "s.describe()",
        "s.alpaca_secret_key, s.ib_account, s.telegram_bot_token",
        "print('control:', os.environ['CONTROL_VALUE'], label)",
    ]]
    nb.metadata['kernelspec'] = {'name': 'smallcap', 'display_name': 'smallcap', 'language': 'python'}
    nbformat.write(nb, path)


@pytest.mark.slow
def test_papermill_notebook_outputs(secret_env, monkeypatch):
    monkeypatch.setenv('CONTROL_VALUE', 'visible-control-31337')
    src, out = secret_env / 'in.ipynb', secret_env / 'out.ipynb'
    _notebook(src)
    pm.execute_notebook(str(src), str(out), parameters={'label': 'param-ok'}, kernel_name='smallcap', progress_bar=False)
    text = out.read_text()
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata['kernelspec']['name'] == 'smallcap'
    assert 'visible-control-31337 param-ok' in text                # outputs were captured: the check can see what prints
    assert "INFO:smallcap:loaded" in text and '**********' in text  # the log line and masked values are there
    assert SECRET not in text                                      # ... and the secret is not, anywhere in the file
