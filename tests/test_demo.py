"""`smallcap demo` end to end in a scratch working directory: the research loop, a second run that reuses the first's
work, and its report checked in a real headless Chromium. (Its wall time is a benchmark figure, benchmarks/demo.py,
not an assertion.)"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from browser import load

pytestmark = pytest.mark.slow


def _demo(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith('SMALLCAP_')}     # the defaults: data/ and reports/ under cwd
    t = time.perf_counter()
    r = subprocess.run([str(Path(sys.executable).with_name('smallcap')), 'demo', *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    return r, time.perf_counter() - t


def test_demo_runs_the_loop_then_reuses_it_and_its_report_renders(tmp_path):
    r1, t1 = _demo(tmp_path)
    print(r1.stdout[-3000:], f"\ncold run: {t1:.1f}s")
    assert r1.returncode == 0, r1.stdout[-2000:] + r1.stderr[-3000:]
    out = r1.stdout
    for i in range(1, 6): assert f"[{i}/5]" in out                                    # progress, step by step
    assert 'SYNTHETIC' in out and 'candidate(s)' in out and 'folds x 27 combinations' in out
    assert re.search(r'^\s+\[(ok|FAIL)\] dsr: ', out, re.M) and re.search(r'^\s+verdict\s+(PASS|FAIL)', out, re.M)
    report = tmp_path / re.search(r'^report: (\S+)$', out, re.M).group(1)               # printed relative to the working directory
    assert report.is_file() and report.parent == tmp_path / 'reports' and (tmp_path / 'reports' / 'index.html').exists()
    assert (tmp_path / 'data' / 'sample.duckdb').exists()
    mtime = report.stat().st_mtime

    r2, t2 = _demo(tmp_path)
    print(r2.stdout[-1500:], f"\nwarm run: {t2:.1f}s")
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert r2.stdout.count('(reused ') == 2 and report.stat().st_mtime == mtime          # walk-forward and report reused
    assert re.search(r'^report: (\S+)$', r2.stdout, re.M).group(1) == str(report.relative_to(tmp_path))

    text = report.read_text()
    assert 'SYNTHETIC DATA' in text and 'smallcap walkforward gap_and_go' in text
    for p in (str(tmp_path), str(tmp_path.resolve()), str(Path.home()), os.getcwd()):
        if len(p) > 1: assert not re.search(re.escape(p) + r'(?=[/"\'\s<])', text), p
    shot = tmp_path / 'demo.png'
    r = load(report, selectors=('.plotly-graph-div', '#stats-table', '#synthetic-mark', '#verdict'),
             values={'rendered': "Array.from(document.querySelectorAll('.plotly-graph-div')).filter(d => d._fullLayout).length"},
             screenshot=shot, clip_to='#equity-chart')
    print(r.counts, r.values, r.screenshot_size)
    assert r.severe == [] and r.external_requests == []
    # equity+drawdown, monthly heatmap, trade P&L, 3 sample candlesticks, IS/OOS Sharpe per fold, parameter stability
    assert r.counts == {'.plotly-graph-div': 8, '#stats-table': 1, '#synthetic-mark': 1, '#verdict': 1} and r.values['rendered'] == 8
    assert shot.stat().st_size > 50_000

    r3, _ = _demo(tmp_path, '--fresh')                        # --fresh recomputes (same data, so the same figures)
    assert r3.returncode == 0 and '(reused ' not in r3.stdout
    strip = lambda s: re.findall(r'^  (OOS \w+.*|verdict.*|deflated Sharpe.*)$', s, re.M)
    assert strip(r3.stdout) == strip(out)
