"""Walk-forward: the synthetic proof (a planted edge passes the deploy gate, pure noise is rejected), the command,
interrupting a process-pool run, and the tutorial."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT

RISK = dict(sizing='fixed_notional', notional=10_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
            max_positions=20, max_gross_pct=5.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0)


def market(edge, seed=1, n_symbols=24, n_sessions=60):
    "Premarket + regular minute bars of a synthetic market (gap_and_go needs the premarket)."
    from smallcap.data.calendar import session_of
    from smallcap.data.panel import Panel
    from smallcap.data.synth import SynthConfig, generate
    mk = generate(SynthConfig(seed=seed, n_symbols=n_symbols, n_sessions=n_sessions, edge=edge, gap_prob=0.3))
    return Panel.from_bars(mk.bars[np.isin(session_of(mk.bars.ts).to_numpy(), ['premarket', 'regular'])])


@pytest.mark.slow
def test_planted_edge_is_recovered_out_of_sample_and_passes_the_gate():
    from smallcap.backtest.walkforward import GatePolicy, walk_forward
    from smallcap.strategy.base import get_strategy
    wf = walk_forward(get_strategy('gap_and_go', rvol_days=1), market('gap_and_go'), {'gap_min': [0.05, 0.1, 0.2], 'hold': [15, 30, 60]},
                      train='10D', test='5D', risk=RISK, executor='inprocess', seed=1, gate=GatePolicy())
    s = wf.summary()
    assert len(wf.folds) == 10 and wf.inputs['combinations'] == 9
    assert s.oos_total_return > 0.2 and s.oos_sharpe > 3 and s.oos_trades >= 100      # the edge, out of sample
    assert (wf.folds.oos_total_return > 0).mean() >= 0.7
    assert wf.dsr['n_trials'] == 9 and wf.dsr['dsr'] > 0.95 and wf.pbo < 0.2 and wf.efficiency > 0.5 and wf.lookahead['clean']
    assert wf.verdict.passed and wf.verdict.verify() and wf.verdict.reasons == []
    assert wf.verdict.deploy.startswith('gap_and_go@')


@pytest.mark.slow
def test_best_of_a_large_sweep_on_noise_looks_good_in_sample_and_is_rejected():
    from smallcap.backtest.walkforward import walk_forward
    from smallcap.strategy.base import get_strategy
    grid = {'gap_min': [0.02, 0.05, 0.1, 0.15, 0.2], 'hold': [5, 15, 30, 60, 120], 'rvol_min': [2.0, 5.0]}
    wf = walk_forward(get_strategy('gap_and_go', rvol_days=1), market(None), grid, train='10D', test='5D', risk=RISK, executor='inprocess', seed=1)
    assert wf.inputs['combinations'] == 50 and wf.dsr['n_trials'] == 50
    assert wf.folds.is_sharpe.mean() > 2 and (wf.folds.is_sharpe > 0).mean() >= 0.7   # the in-sample winner looks good ...
    assert not wf.verdict.passed                                                      # ... but the gate sees through it
    failed = {c['name'] for c in wf.verdict.checks if not c['passed']}
    assert 'dsr' in failed and wf.dsr['dsr'] < 0.5
    assert wf.summary().oos_sharpe < wf.folds.is_sharpe.mean() / 2


def test_bad_input_is_named():
    from smallcap.backtest.walkforward import GatePolicy, make_folds, walk_forward
    from smallcap.core import ConfigError
    p = market(None, n_symbols=3, n_sessions=6)
    for kw, msg in [(dict(train='3D', test='5D'), 'no complete fold'), (dict(train='2D', test='1D', purge=-3), 'purge must be'),
                    (dict(train='2D', test='1D', objective='alpha'), 'objective must be'), (dict(train='2Q', test='1D'), "unknown unit 'Q'"),
                    (dict(train='2D', test='1D', cash=0), 'cash must be'), (dict(train='2D', test='1D', fill='perfect'), 'fill must be'),
                    (dict(train='2D', test='1D', gate={'min_dsr': 3}), 'GatePolicy.min_dsr')]:
        with pytest.raises(ConfigError, match=msg): walk_forward('sma_cross', p, {'fast': [5], 'slow': [20]}, executor='inprocess', **kw)
    with pytest.raises(ConfigError, match='anchored must be'): make_folds(p.index, '2D', '1D', anchored='yes')
    with pytest.raises(ConfigError, match='GatePolicy has no fields'): GatePolicy.from_yaml('min_sharp: 1')


def test_command_on_a_store_file_and_a_parquet_export(tmp_path):
    from click.testing import CliRunner
    from smallcap.backtest.walkforward import Verdict, WalkForwardResult
    from smallcap.cli import walkforward as walkforward_command
    from smallcap.data.synth import SynthConfig, build_store
    st = build_store(tmp_path / 's.duckdb', SynthConfig(seed=2, n_symbols=3, n_sessions=8))
    st.export_parquet(tmp_path / 'pq')
    del st
    pol = tmp_path / 'gate.yaml'
    pol.write_text('min_dsr: 0.0\nmax_pbo: 1.0\nmin_oos_trades: 0\nmin_efficiency: null\n')
    args = ['sma_cross', 'short=true', '--grid', 'fast=5,10', '--grid', 'slow=20,40', '--train', '4D', '--test', '2D', '--executor', 'inprocess',
            '--gate-policy', str(pol), '--no-progress']
    r = CliRunner().invoke(walkforward_command, args + ['--store', str(tmp_path / 'pq'), '--out', str(tmp_path / 'a')])
    assert r.exit_code == 0, r.output
    assert 'PASS' in r.output and 'saved:' in r.output and 'oos_sharpe' in r.output
    res = WalkForwardResult.load(tmp_path / 'a')
    assert len(res.folds) == 2 and res.verdict.passed and res.inputs['data']['synthetic'] is True
    v = Verdict.from_json((tmp_path / 'a' / 'verdict.json').read_text())
    assert v.verify() and v.policy['min_oos_trades'] == 0
    r = CliRunner().invoke(walkforward_command, args + ['--store', str(tmp_path / 's.duckdb'), '--out', str(tmp_path / 'b'), '--json'])
    assert r.exit_code == 0, r.output
    j = json.loads(r.output)
    assert j['verdict']['passed'] and len(j['folds']) == 2
    b = WalkForwardResult.load(tmp_path / 'b')
    pd.testing.assert_series_equal(b.oos_equity, res.oos_equity, check_freq=False)       # DuckDB store and its export: the same run
    r = CliRunner().invoke(walkforward_command, ['sma_cross', '--store', str(tmp_path / 'nope.duckdb')])
    assert r.exit_code != 0 and 'no store at' in r.output


INTERRUPTED = textwrap.dedent('''
    import os, sys
    sys.path.insert(0, {tests!r})
    from test_walkforward import market, RISK
    from smallcap.backtest.walkforward import walk_forward
    if __name__ == '__main__':                                     # spawned workers re-import this file
        p = market(None, n_symbols=6, n_sessions=20)
        print('START', flush=True)
        try:
            walk_forward('sma_cross', p, {{'fast': [3, 5, 8, 10, 15], 'slow': [20, 30, 40, 60]}}, train='4D', test='2D', risk=RISK,
                         executor='process', workers=2)
        except KeyboardInterrupt:
            print('INTERRUPTED', flush=True)
            sys.exit(3)
        print('FINISHED', flush=True)
''')


@pytest.mark.slow
def test_interrupting_a_process_pool_run_leaves_no_workers(tmp_path):
    import psutil
    script = tmp_path / 'run.py'
    script.write_text(INTERRUPTED.format(tests=str(Path(__file__).parent)))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(proc.pid)
    workers: set[int] = set()
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:                   # wait until the pool's workers exist and run
        kids = [k for k in me.children(recursive=True) if 'python' in (k.name() or '').lower()]
        workers |= {k.pid for k in kids}
        if len(kids) >= 2: time.sleep(3); workers |= {k.pid for k in me.children(recursive=True)}; break
        time.sleep(0.2)
    assert proc.poll() is None and len(workers) >= 2, 'the pool never started'
    os.kill(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert 'INTERRUPTED' in out and proc.returncode == 3, (out, err[-2000:])
    time.sleep(1)
    alive = [p for p in workers if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"worker processes left behind: {alive}"


@pytest.mark.slow
def test_tutorial_runs(tmp_path):
    from execnb.nbio import read_nb
    from execnb.shell import CaptureShell
    nb = read_nb(ROOT / 'nbs' / 'tutorials' / 'walkforward.ipynb')
    t = time.perf_counter()
    cwd = os.getcwd()
    try:
        os.chdir(tmp_path)
        CaptureShell().run_all(nb, exc_stop=True)
    finally: os.chdir(cwd)
    assert time.perf_counter() - t < 120
