"""The same walk-forward in-process, on a process pool and on a real Dask LocalCluster: identical results.
Workers read their bars from Parquet (the store's export, or the panel written once), never from pickles."""
import os

import numpy as np
import pandas as pd
import pytest

RISK = dict(sizing='fixed_notional', notional=10_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
            max_positions=20, max_gross_pct=5.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=100.0)
GRID = {'fast': [5, 10], 'slow': [20, 40], 'short': [True]}


def same(a, b):
    pd.testing.assert_frame_equal(a.folds, b.folds)
    pd.testing.assert_frame_equal(a.oos_trades, b.oos_trades)
    pd.testing.assert_frame_equal(a.oos_fills, b.oos_fills)
    pd.testing.assert_frame_equal(a.trials, b.trials)
    pd.testing.assert_series_equal(a.oos_equity, b.oos_equity, check_freq=False)
    assert a.dsr == b.dsr and a.pbo == b.pbo and a.lookahead == b.lookahead and a.verdict.passed == b.verdict.passed
    assert a.verdict.config_id == b.verdict.config_id


@pytest.fixture(scope='module')
def export(tmp_path_factory):
    from smallcap.data.synth import SynthConfig, build_store
    d = tmp_path_factory.mktemp('wf')
    st = build_store(d / 's.duckdb', SynthConfig(seed=4, n_symbols=4, n_sessions=9))
    st.export_parquet(d / 'pq')
    return d / 'pq'


@pytest.mark.slow
def test_inprocess_process_pool_and_dask_cluster_agree(export):
    from dask.distributed import Client, LocalCluster
    from smallcap.backtest.walkforward import walk_forward
    from smallcap.data.panel import Panel
    from smallcap.data.store import ParquetStore
    kw = dict(train='4D', test='2D', risk=RISK, seed=7)
    ref = walk_forward('sma_cross', str(export), GRID, executor='inprocess', **kw)
    assert len(ref.folds) == 2 and len(ref.oos_trades) > 0
    pool = walk_forward('sma_cross', str(export), GRID, executor='process', workers=2, **kw)
    same(ref, pool)
    assert pool.units.pid.nunique() >= 1 and (pool.units.pid != ref.units.pid.iloc[0]).all()     # really elsewhere
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context('spawn')) as own:            # the caller's pool, reused and left running
        same(ref, walk_forward('sma_cross', str(export), GRID, executor=own, **kw))
        assert own.submit(os.getpid).result() > 0
    panel = Panel.from_bars(ParquetStore(export).bars(None, None, None))
    mem = walk_forward('sma_cross', panel, GRID, executor='inprocess', **kw)                      # a Panel: written once to Parquet for workers
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster, Client(cluster) as client:
        dk = walk_forward('sma_cross', str(export), GRID, executor=client, **kw)
        same(ref, dk)
        dk_mem = walk_forward('sma_cross', panel, GRID, executor=cluster.scheduler_address, **kw)
        same(mem, dk_mem)
        assert set(dk.units.pid) <= set(client.run(os.getpid).values())                         # ran on the cluster's workers
    pd.testing.assert_series_equal(mem.oos_equity, dk_mem.oos_equity, check_freq=False)
    again = walk_forward('sma_cross', str(export), GRID, executor='inprocess', **kw)               # reproducible
    same(ref, again)
