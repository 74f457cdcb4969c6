"""Every library strategy and combinator is causal and pure on synthetic data, at many cut points."""
import numpy as np
import pytest

from smallcap.data.panel import Panel
from smallcap.data.synth import SynthConfig, generate
from smallcap.strategy.base import check_causal, get_strategy, list_strategies

LIBRARY = ['sma_cross', 'rsi_reversion', 'bollinger_reversion', 'stochrsi_ema', 'dual_momentum', 'atr_breakout', 'orb', 'gap_and_go', 'vwap_reclaim']


@pytest.fixture(scope='module')
def panel():
    mk = generate(SynthConfig(n_symbols=8, n_sessions=10, seed=21, edge='gap_and_go'))
    return Panel.from_bars(mk.bars.drop(columns='timeframe'))


def test_registry_holds_the_library():
    assert set(LIBRARY) | {'arbiter', 'ensemble'} <= set(list_strategies())


@pytest.mark.slow
@pytest.mark.parametrize('name', LIBRARY)
def test_library_strategy_is_causal(panel, name):
    for strat in [get_strategy(name)] + get_strategy(name).combinations()[:2]:
        r = check_causal(strat, panel, cuts=60)
        assert r.ok, str(r)
        assert len(r.cuts) >= 30


@pytest.mark.slow
@pytest.mark.parametrize('spec', [dict(name='arbiter', members=('gap_and_go', 'orb', 'vwap_reclaim')),
                                  dict(name='ensemble', members=('sma_cross', 'rsi_reversion', 'bollinger_reversion'), threshold=0.5)])
def test_combinators_are_causal(panel, spec):
    s = get_strategy(spec.pop('name'), **spec)
    assert check_causal(s, panel, cuts=40).ok


def test_check_can_fail(panel):
    "A strategy that peeks one bar ahead is caught, with the bar named."
    from dataclasses import dataclass
    from typing import ClassVar
    from smallcap.strategy.base import Signals, Strategy

    @dataclass(frozen=True)
    class Peek(Strategy):
        name: ClassVar[str] = 'peek'
        def signals(self, bars):
            z = (bars.close - bars.close.mean()) / bars.close.std()        # full-sample normalisation: look-ahead
            return Signals.from_frames(bars.close, entries_long=z > 1)
    r = check_causal(Peek(), panel, cuts=20)
    assert not r.ok and 'LOOK-AHEAD' in str(r)


def test_signals_have_the_panel_shape(panel):
    for n in LIBRARY:
        s = get_strategy(n).signals(panel)
        assert s.entries_long.shape == panel.close.shape and s.index.equals(panel.index)
        assert not (s.entries_long & s.exits_long).to_numpy().all()
