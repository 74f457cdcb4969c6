"""The benchmark runner produces its JSON lines (its figures are not asserted: no timed tests)."""
import json
import subprocess
import sys

from conftest import ROOT


def test_runner_prints_figures_with_their_reference():
    r = subprocess.run([sys.executable, '-m', 'benchmarks', 'cold_start', '--rounds', '2'], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (0, 1), r.stderr                    # 1 only if a figure missed its target
    figs = [json.loads(l) for l in r.stdout.splitlines()]
    assert {f['figure'] for f in figs} == {'import smallcap', 'import smallcap.core', 'smallcap --help'}
    for f in figs:
        assert f['reference'] == 'import pandas' and f['reference_seconds'] > 0 and f['seconds'] > 0
        assert abs(f['ratio'] - f['seconds'] / f['reference_seconds']) < 0.01


def test_runner_rejects_unknown_names():
    r = subprocess.run([sys.executable, '-m', 'benchmarks', 'nope'], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and 'unknown benchmark' in r.stderr
