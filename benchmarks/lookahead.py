"""The look-ahead check: its cost on every library strategy, and its power to find a one-bar peek.

Data: 8 symbols x 5 sessions of synthetic extended-hours minute bars (3,530 bars, `SynthConfig(seed=21)`).

- cost: `check_lookahead(strategy, bars, cuts=50)` per library strategy (the combinators with three members),
  against `check_causal(strategy, bars, cuts=50)` on the same bars (same number of recomputations, cuts placed
  evenly). Warmed up first (numba kernels compiled). Target: 5 s per strategy.
- power: every library strategy made to act one bar early (one signal field shifted by -1; one variant per field
  the strategy sets on this data). Figures: how many variants `check_lookahead` finds with 20 and 50 cuts, against
  `check_causal` with 20 and 50 evenly spaced cuts and 50 cuts drawn at random (mean over 10 draws). Target: all.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

from benchmarks import medians

MEMBERS = {'arbiter': dict(members=('gap_and_go', 'orb', 'vwap_reclaim')),
           'ensemble': dict(members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.5)}


def _setup():
    from smallcap.data.panel import Panel
    from smallcap.data.synth import SynthConfig, generate
    from smallcap.strategy.base import get_strategy, list_strategies
    mk = generate(SynthConfig(n_symbols=8, n_sessions=5, seed=21, edge='gap_and_go'))
    panel = Panel.from_bars(mk.bars.drop(columns='timeframe'))
    return panel, [get_strategy(n, **MEMBERS.get(n, {})) for n in list_strategies() if not n.startswith('_')]


def _early(inner, field):
    from smallcap.strategy.base import SIGNAL_BOOLS, SIGNAL_FLOATS, Signals, Strategy

    @dataclass(frozen=True)
    class Early(Strategy):
        name: ClassVar[str] = '_early'
        @property
        def warmup(self) -> int: return inner.warmup
        def signals(self, bars):
            s = inner.signals(bars)
            fr = {f: getattr(s, f) for f in (*SIGNAL_BOOLS, *SIGNAL_FLOATS) if getattr(s, f) is not None}
            fr[field] = fr[field].shift(-1)
            return Signals.from_frames(bars.close, **fr)
    return Early()


def run(rounds: int = 1) -> Iterator[dict]:
    "Cost per library strategy against check_causal, and one-bar peeks found by each way of cutting."
    import numpy as np
    from smallcap.backtest.lookahead import check_lookahead
    from smallcap.strategy.base import SIGNAL_BOOLS, SIGNAL_FLOATS, check_causal
    panel, strategies = _setup()
    total = {'ours': 0.0, 'ref': 0.0}
    for s in strategies:
        s.signals(panel); check_lookahead(s, panel, cuts=2)                 # compile kernels, load imports
        r = check_lookahead(s, panel, cuts=50)
        m = medians(rounds, ours=lambda: check_lookahead(s, panel, cuts=50), ref=lambda: check_causal(s, panel, cuts=50))
        o, f = m['ours'], m['ref']
        total['ours'] += o; total['ref'] += f
        yield {'figure': f'check_lookahead, 50 cuts, {s.name}', 'seconds': round(o, 3), 'reference': 'check_causal, 50 cuts',
               'reference_seconds': round(f, 3), 'ratio': round(o / f, 2), 'target_seconds': 5.0, 'clean': r.ok, 'rounds': rounds}
    yield {'figure': 'check_lookahead, 50 cuts, every library strategy', 'seconds': round(total['ours'], 3), 'reference': 'check_causal, 50 cuts',
           'reference_seconds': round(total['ref'], 3), 'ratio': round(total['ours'] / total['ref'], 2), 'rounds': rounds}
    found = {k: 0.0 for k in ('check_lookahead 20', 'check_lookahead 50', 'check_causal 20', 'check_causal 50', 'random 50')}
    n = 0
    for s in strategies:
        full = s.signals(panel)
        for fld in (*SIGNAL_BOOLS, *SIGNAL_FLOATS):
            v = None if getattr(full, fld) is None else getattr(full, fld).to_numpy()
            if v is None or not (v.any() if v.dtype == bool else np.isfinite(v).any()): continue
            e, n = _early(s, fld), n + 1
            found['check_lookahead 20'] += not check_lookahead(e, panel, cuts=20).ok
            found['check_lookahead 50'] += not check_lookahead(e, panel, cuts=50).ok
            found['check_causal 20'] += not check_causal(e, panel, cuts=20).ok
            found['check_causal 50'] += not check_causal(e, panel, cuts=50).ok
            lo, rng = min(e.warmup_bars(panel.index), (len(panel) - 1) // 2) + 1, np.random.default_rng(0)   # as check_lookahead's own cuts
            found['random 50'] += np.mean([not check_lookahead(e, panel, cuts=sorted(rng.choice(np.arange(lo, len(panel)), 50, replace=False).tolist())).ok
                                           for _ in range(10)])
    for k, v in found.items():
        fig = {'figure': f'one-bar peeks found, {k} cuts', 'value': round(v, 1), 'of': n, 'ratio': round(v / n, 3)}
        if k.startswith('check_lookahead'): fig.update(target_ratio=1.0, better='higher')
        yield fig
