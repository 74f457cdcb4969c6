"""The event engine (the trading loop with the paper broker, the engine live trading runs) against its references.

1. against bare backtrader on the same bars and signals (the plan of `benchmarks.backtrader`: sma_cross with shorts,
   20 symbols x ~5,000 regular-session minute bars, simple fills): ours is `smallcap.backtest.event.run(plan)`, the
   whole engine (the risk engine's `decide` at every bar where something can happen, the order manager, the paper
   broker's fill and cost model, the fills and orders frames); the reference is the bare backtrader strategy a user would
   write. Target: at least 10x faster (ratio <= 0.1).
2. against today's vectorbt-engine backtest (`run_plan(plan, 'vectorbt')`), on the same plan, where no limit binds:
   what exactness costs. No target; the ratio is reported.
3. the walk-forward of `benchmarks.walkforward` (100 combinations x 10 folds, in process) with its out-of-sample side
   and the deploy gate on the event engine, against the same walk-forward with the out-of-sample side on the vectorbt
   engine (today's figure, measured in the same run). Target: within 1.5x.
Each figure is a ratio of medians of rounds that time both sides alternately.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterator

from benchmarks import medians


def run(rounds: int = 3) -> Iterator[dict]:
    "Event engine vs bare backtrader, vs the vectorbt engine, and the walk-forward with the event engine out of sample."
    warnings.filterwarnings('ignore')
    from benchmarks.backtrader import bare, plan
    from smallcap.backtest.core import run_plan
    from smallcap.backtest.event import run as event_run
    p = plan()
    T, N = p.shape
    fills, _, _ = event_run(p); run_plan(p, 'vectorbt')                      # warm up (imports, kernels)
    n_bare = bare(p)
    m = medians(rounds, True, ours=lambda: event_run(p), bare=lambda: bare(p))
    label = f"{N} symbols x {T:,} minute bars, sma_cross signals, simple fills"
    yield {'figure': f'event engine (risk engine, order manager, paper broker) vs bare backtrader, {label}', 'seconds': round(m['ours'], 3),
           'reference': 'bare backtrader: PandasData feeds, default broker and commission, market orders on the same signals',
           'reference_seconds': round(m['bare'], 3), 'ratio': round(m['ours'] / m['bare'], 3), 'target_ratio': 0.1, 'rounds': rounds,
           'fills': len(fills), 'bare_orders': n_bare}
    m = medians(rounds, True, ours=lambda: run_plan(p, 'event'), vbt=lambda: run_plan(p, 'vectorbt'))
    yield {'figure': f'event-engine backtest vs vectorbt-engine backtest (no limit binds; results assembled), {label}', 'seconds': round(m['ours'], 3),
           'reference': "run_plan(plan, 'vectorbt'): the screening path", 'reference_seconds': round(m['vbt'], 3), 'ratio': round(m['ours'] / m['vbt'], 3),
           'rounds': rounds}
    from benchmarks.walkforward import FAST, RISK, SLOW, TEST, TRAIN, _bars
    from smallcap.backtest.walkforward import walk_forward
    from smallcap.risk import RiskConfig
    bars = _bars()
    wf = lambda engine: walk_forward('sma_cross', bars, {'fast': FAST, 'slow': SLOW, 'short': [True]}, train=TRAIN, test=TEST, risk=RiskConfig(**RISK),
                                     fill='simple', executor='inprocess', engine=engine, gate=engine == 'event', lookahead_cuts=2)
    wf('event'); wf('vectorbt')                                                 # warm
    m = medians(max(1, rounds // 2), True, ours=lambda: wf('event'), vbt=lambda: wf('vectorbt'))
    yield {'figure': f"walk-forward, 100 combinations x 10 folds, {bars.close.shape[1]} symbols x {len(bars):,} minute bars, in process: out of sample and gate on the event engine",
           'seconds': round(m['ours'], 2), 'reference': "the same walk-forward with the out-of-sample side on the vectorbt engine (today's figure)",
           'reference_seconds': round(m['vbt'], 2), 'ratio': round(m['ours'] / m['vbt'], 3), 'target_ratio': 1.5, 'rounds': max(1, rounds // 2)}
