"""Published reports: both kinds through papermill + nbconvert, opened in a real headless Chromium; no secret, no
machine path, inputs stated well enough to reproduce the run; the reports index; `smallcap report`."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from browser import load
from conftest import ROOT

pytestmark = pytest.mark.slow

SECRETS = {'ALPACA_API_SECRET': 'fake-alpaca-secret-0123456789', 'APCA_API_SECRET_KEY': 'fake-apca-secret-9876543210',
           'APCA_API_KEY_ID': 'FAKEKEYID00112233', 'SMALLCAP_TELEGRAM_BOT_TOKEN': '123456:fake-telegram-token-abcdef',
           'SMALLCAP_IB_ACCOUNT': 'DU-FAKE-7654321', 'SMALLCAP_GATE_KEY': 'fake-gate-hmac-key-42'}
CHARTS_JS = "Array.from(document.querySelectorAll('.plotly-graph-div')).filter(d => d._fullLayout && d.querySelector('.main-svg')).length"
BOTTOM_JS = "(() => {{ const e = document.querySelector({sel}); return e ? Math.ceil(e.getBoundingClientRect().bottom + window.scrollY) : -1; }})()"


@pytest.fixture(scope='module')
def published(tmp_path_factory):
    "Both kinds of example result, published with fake secrets in the environment (the kernel inherits it)."
    from smallcap.report import example_result, publish
    d = tmp_path_factory.mktemp('reports')
    with pytest.MonkeyPatch.context() as mp:
        for k, v in SECRETS.items(): mp.setenv(k, v)
        mp.setenv('SMALLCAP_REPORTS_DIR', str(d / 'reports'))
        bt = example_result(d / 'results' / 'gap_and_go-bt-example')
        wf = example_result(d / 'results' / 'gap_and_go-wf-example', kind='walkforward')
        out = {'backtest': publish(bt, out_dir=d / 'reports'), 'walkforward': publish(wf, out_dir=d / 'reports')}
    return d, out


# (kind, charts): equity+drawdown, monthly heatmap, P&L distribution, 3 sample candlesticks; walk-forward adds the
# IS/OOS Sharpe per fold and the parameter stability heatmap
EXPECTED = [('backtest', 6), ('walkforward', 8)]


@pytest.mark.parametrize('kind,charts', EXPECTED)
def test_report_renders_in_chromium(published, kind, charts, tmp_path):
    d, out = published
    path = out[kind]
    shot = tmp_path / f'{kind}.png'
    r = load(path, selectors=('.plotly-graph-div', '#stats-table', '#synthetic-mark', '#verdict', 'script[src]', 'link[rel=stylesheet]'),
             values={'rendered': CHARTS_JS, 'stats_bottom': BOTTOM_JS.format(sel=json.dumps('#stats-table')),
                     'equity_bottom': BOTTOM_JS.format(sel=json.dumps('#equity-chart')),
                     'equity_title': "document.querySelector('#equity-chart .gtitle')?.textContent || ''"},
             screenshot=shot, clip_to='#equity-chart')
    print(f"{kind}: {path.stat().st_size / 1e6:.2f} MB, counts {r.counts}, values {r.values}, screenshot {r.screenshot_size}")
    assert r.severe == [], r.severe                       # no JavaScript error, no failed load (Chromium's SEVERE log entries)
    assert r.external_requests == []                      # nothing fetched from a network (the proxy is a dead end anyway)
    assert r.counts['.plotly-graph-div'] == charts and r.values['rendered'] == charts
    assert r.counts['script[src]'] == 0 and r.counts['link[rel=stylesheet]'] == 0      # everything inline
    assert r.counts['#stats-table'] == 1 and r.counts['#synthetic-mark'] == 1
    assert r.counts['#verdict'] == (1 if kind == 'walkforward' else 0)
    assert 'equity' in r.values['equity_title'].lower()   # the first chart is the equity curve
    # the screenshot runs from the top of the page to the bottom of the equity chart: it shows the statistics table and that chart
    w, h = r.screenshot_size
    assert w == 1280 and 0 < r.values['stats_bottom'] < r.values['equity_bottom'] <= h + 1, (r.values, r.screenshot_size)
    assert shot.stat().st_size > 50_000
    try:
        from PIL import Image
    except ImportError: return
    im = Image.open(shot).convert('RGB')
    chart = im.crop((0, max(0, h - 500), w, h - 20))           # the equity chart's area: drawn lines, not a blank page
    assert len(chart.getcolors(1 << 20)) > 20


@pytest.mark.parametrize('kind', ['backtest', 'walkforward'])
def test_report_holds_no_secret_and_no_machine_path(published, kind):
    d, out = published
    text = out[kind].read_text()
    for k, v in SECRETS.items(): assert v not in text, f"{k}'s value is in the report"
    for p in {str(ROOT), str(d), str(d.resolve()), str(Path.home()), os.getcwd(), sys.prefix}:
        if len(p) > 1: assert not re.search(re.escape(p) + r'(?=[/"\'\s<])', text), f"{p} appears in the report"
    assert 'SYNTHETIC DATA' in text and 'smallcap version' in text and 'data fingerprint' in text


def test_index_lists_reports_newest_first(published):
    d, out = published
    ix = d / 'reports' / 'index.html'
    html = ix.read_text()
    assert html.index(out['walkforward'].name) < html.index(out['backtest'].name)   # published later, listed first
    assert html.count("<tr><td><a href=") == 2 and 'FAIL' in html and 'SYNTHETIC' in html
    for href in re.findall(r"href='([^']+)'", html): assert (ix.parent / href).exists(), href
    r = load(ix, selectors=('#reports tbody tr', 'a'))
    assert r.severe == [] and r.external_requests == [] and r.counts['#reports tbody tr'] == 2


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = str(Path(sys.executable).with_name('smallcap'))
    r = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                       env={**os.environ, 'PYTHONWARNINGS': 'ignore', 'SMALLCAP_DATA_DIR': str(cwd), 'SMALLCAP_REPORTS_DIR': str(cwd / 'reports')})
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_report_command_and_the_command_it_states_reproduces_the_result(tmp_path):
    "`smallcap backtest` on a store, `smallcap report` on its result, then the report's own command gives the same figures."
    from smallcap.data.synth import SynthConfig, build_store
    build_store(tmp_path / 'small.duckdb', SynthConfig(seed=4, n_symbols=5, n_sessions=8, gap_prob=0.3, edge='gap_and_go'))
    _cli('backtest', 'orb', 'minutes=15', '--store', 'small.duckdb', '--session', 'extended', '--cost', 'participation=0.05',
         '--out', 'reports/results/first', cwd=tmp_path)
    r = _cli('report', 'reports/results/first', '--out', 'reports', '--title', 'ORB on the small store', cwd=tmp_path)
    assert 'reports/first.html' in r.stdout and 'SYNTHETIC' in r.stdout
    text = (tmp_path / 'reports' / 'first.html').read_text()
    assert '<title>ORB on the small store</title>' in text
    import html as _html
    cmd = _html.unescape(re.search(r"<pre class=.cmd.>(.*?)</pre>", text, re.S).group(1))
    words = shlex.split(cmd)
    assert words[:3] == ['smallcap', 'backtest', 'orb'] and 'participation=0.05' in words and '--store' in words
    _cli(*words[1:], '--out', 'reports/results/again', cwd=tmp_path)
    a, b = (json.loads((tmp_path / 'reports' / 'results' / n / 'result.json').read_text()) for n in ('first', 'again'))
    assert a['inputs'] == b['inputs'] and a['stats'] == b['stats']
    # the charts' bars came from the store the result names (found in the data directory) and were saved beside it
    assert (tmp_path / 'reports' / 'results' / 'first' / 'sample_bars.parquet').exists() == (a['stats']['trades'] > 0)


def test_bad_input_gets_clear_errors(tmp_path):
    from smallcap.core import ConfigError, DataError
    from smallcap.report import ReportError, publish
    (tmp_path / 'x').mkdir()
    with pytest.raises(DataError, match='result.json missing'): publish(tmp_path / 'x', out_dir=tmp_path)
    with pytest.raises(DataError, match='no such result directory'): publish(tmp_path / 'nope', out_dir=tmp_path)
    with pytest.raises(ConfigError, match='needs a BacktestResult'): publish({'kind': 'backtest'}, out_dir=tmp_path)
    (tmp_path / 'x' / 'result.json').write_text('{"kind": "backtest"}')
    with pytest.raises(Exception): publish(tmp_path / 'x', out_dir=tmp_path)       # half a result: loading it fails, nothing written
    assert not list(tmp_path.glob('*.html'))
    from smallcap.report import example_result
    ex = example_result(tmp_path / 'ok')
    with pytest.raises(ReportError, match="kernel 'no-such-kernel' is not registered"): publish(ex, out_dir=tmp_path, kernel='no-such-kernel')
    import nbformat
    cells = [nbformat.v4.new_code_cell("result = ''", metadata={'tags': ['parameters']}),
             nbformat.v4.new_code_cell("raise RuntimeError('template broke at ' + __import__('os').getcwd())")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / 'nolang.ipynb')
    with pytest.raises(ReportError, match='could not run'): publish(ex, out_dir=tmp_path, template=tmp_path / 'nolang.ipynb')
    spec = {'kernelspec': {'name': 'python3', 'language': 'python', 'display_name': 'Python 3'}}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=spec), tmp_path / 'bad.ipynb')
    with pytest.raises(ReportError) as e: publish(ex, out_dir=tmp_path, template=tmp_path / 'bad.ipynb')
    assert 'template broke' in str(e.value) and str(tmp_path) not in str(e.value)
    assert not list(tmp_path.glob('*.html'))
