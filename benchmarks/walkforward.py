"""Walk-forward: SMA crossover, a 100-combination grid, 10 folds, 20 symbols of synthetic minute bars.

1. The same walk-forward in-process (the reference, warmed), on a local process pool (started for the run: cold
   workers that import vectorbt and compile their kernels; and a reused, warm pool) and on a Dask LocalCluster
   (single-threaded worker processes, warm), each with 1 and 2 workers: seconds, speed-up over in-process, and the
   speed-up per added worker (2 workers against 1). Workers read their bars from the panel written once to
   Parquet. Target for warm workers: 2 workers >= 1.3x faster than 1 (the machine has 2 cores, shared). The
   results of every run are checked equal to the in-process fold table.
2. Peak resident memory of a worker (`ru_maxrss` read inside the worker after its folds) as the universe grows
   from 5 to 10 to 20 symbols (process pool, 2 workers): the sweep sizes its side-by-side chunk to the window, so
   a worker's peak should stay flat. Target: peak(20 symbols) / peak(5 symbols) <= 1.5.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

FAST = [3, 5, 8, 10, 13, 15, 20, 25, 30, 35]
SLOW = [40, 50, 60, 80, 100, 120, 150, 200, 250, 300]
RISK = dict(sizing='fixed_notional', notional=5_000, max_position_pct=1.0, max_adv_pct=None, min_avg_volume=0, min_avg_dollar_volume=0,
            max_positions=50, max_gross_pct=10.0, leverage=4.0, max_daily_loss_pct=None, cooldown_minutes=0, min_price=0.5, max_price=1000.0)
TRAIN, TEST, SESSIONS = '5D', '2D', 25          # 5 + 10 x 2 sessions: 10 folds


def _bars(n_symbols: int = 20, n_sessions: int = SESSIONS, seed: int = 7):
    "Regular-session minute bars of the synthetic market as a Panel."
    from smallcap.data.calendar import session_of
    from smallcap.data.panel import Panel
    from smallcap.data.synth import SynthConfig, generate
    mk = generate(SynthConfig(seed=seed, n_symbols=n_symbols, n_sessions=n_sessions))
    return Panel.from_bars(mk.bars[session_of(mk.bars.ts).to_numpy() == 'regular'])


def _wf(bars, executor, workers=None):
    from smallcap.backtest.walkforward import walk_forward
    from smallcap.risk import RiskConfig
    t = time.perf_counter()
    r = walk_forward('sma_cross', bars, {'fast': FAST, 'slow': SLOW, 'short': [True]}, train=TRAIN, test=TEST, risk=RiskConfig(**RISK),
                     fill='simple', executor=executor, workers=workers, gate=False, lookahead_cuts=2)
    return time.perf_counter() - t, r


def run(rounds: int = 1) -> Iterator[dict]:
    "In-process vs process pool vs Dask LocalCluster (1 and 2 workers); a worker's peak memory as symbols grow."
    import pandas as pd
    from dask.distributed import Client, LocalCluster
    bars = _bars()
    n = f"sma_cross walk-forward, 100 combinations x 10 folds, {bars.close.shape[1]} symbols x {len(bars):,} minute bars"
    _wf(bars.select(bars.symbols[:2]), 'inprocess')                                  # warm this process's imports and JIT caches
    t_in, ref = min((_wf(bars, 'inprocess') for _ in range(rounds)), key=lambda x: x[0])
    assert len(ref.folds) == 10 and ref.inputs['combinations'] == 100
    yield {'figure': f'{n}, in-process', 'seconds': round(t_in, 2), 'reference': 'in-process (itself)', 'reference_seconds': round(t_in, 2), 'ratio': 1.0}
    times: dict[tuple[str, int], float] = {}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    for w in (1, 2):
        t, r = min((_wf(bars, 'process', w) for _ in range(rounds)), key=lambda x: x[0])
        pd.testing.assert_frame_equal(r.folds, ref.folds)
        times['cold', w] = t
        with ProcessPoolExecutor(w, mp_context=multiprocessing.get_context('spawn')) as pool:
            _wf(bars.select(bars.symbols[:2]), pool)                                   # warm the pool's workers
            t, r = min((_wf(bars, pool) for _ in range(rounds)), key=lambda x: x[0])
        pd.testing.assert_frame_equal(r.folds, ref.folds)
        times['process', w] = t
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None) as cl, Client(cl) as c:
            _wf(bars.select(bars.symbols[:2]), c)                                    # warm the workers' imports and JIT caches
            t, r = min((_wf(bars, c) for _ in range(rounds)), key=lambda x: x[0])
        pd.testing.assert_frame_equal(r.folds, ref.folds)
        times['dask', w] = t
    for kind, label in (('cold', 'process pool started for the run (spawn: imports + JIT in every worker included)'),
                        ('process', 'process pool, reused (warm workers)'), ('dask', 'Dask LocalCluster (warm workers)')):
        for w in (1, 2):
            yield {'figure': f'{n}, {label}, {w} worker(s)', 'seconds': round(times[kind, w], 2), 'reference': 'in-process',
                   'reference_seconds': round(t_in, 2), 'ratio': round(t_in / times[kind, w], 2), 'better': 'higher'}
        yield {'figure': f'{label}: speed-up from the 2nd worker', 'seconds': round(times[kind, 2], 2), 'reference': f'{label}, 1 worker',
               'reference_seconds': round(times[kind, 1], 2), 'ratio': round(times[kind, 1] / times[kind, 2], 2), 'better': 'higher',
               **({'target_ratio': 1.3} if kind != 'cold' else {})}
    peaks = {}
    for k in (5, 10, 20):
        _, r = _wf(_bars(n_symbols=k), 'process', 2)
        peaks[k] = float(r.units.peak_rss_mb.max())
        yield {'figure': f'peak worker memory, {k} symbols (process pool, 2 workers)', 'seconds': 0.0, 'peak_mb': round(peaks[k], 1),
               'reference': 'peak worker memory, 5 symbols', 'reference_seconds': 0.0, 'ratio': round(peaks[k] / peaks[5], 2),
               **({'target_ratio': 1.5} if k == 20 else {})}
