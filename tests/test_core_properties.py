"""Property tests of the layer-0 types (hypothesis)."""
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from smallcap.core import (Fill, Intent, Position, ValidationError, client_order_id, validate_bars)

T0 = pd.Timestamp('2026-03-02 14:30', tz='UTC')

fills = st.lists(st.tuples(st.sampled_from(['buy', 'sell']), st.integers(1, 5_000),
                           st.decimals('0.0001', '60', places=4).map(float), st.floats(0, 5)), min_size=1, max_size=40)


@given(fills, st.decimals('0.0001', '60', places=4).map(float))
def test_position_pnl_equals_cash_flows(seq, mark):
    "realised + unrealised P&L always equals the cash the fills moved plus the marked value of what is held."
    pos, cash = Position('ABCD'), 0.0
    for side, qty, px, comm in seq:
        f = Fill('id', 'ABCD', side, qty, px, T0, commission=comm)
        pos, cash = pos.apply(f), cash + f.cash_flow
    assert pos.qty == sum(q if s == 'buy' else -q for s, q, *_ in seq)
    assert (pos.qty == 0) == (pos.avg_price == 0)
    total = pos.realized_pnl + pos.unrealized_pnl(mark)
    assert total == pytest.approx(cash + pos.market_value(mark), rel=1e-9, abs=1e-6)


keys = st.tuples(st.sampled_from(['sma@10', 'sma@20', 'orb']), st.sampled_from(['ABCD', 'abcd', 'WXYZ']),
                 st.integers(0, 10**12), st.sampled_from(list(Intent)))


@given(keys, keys)
def test_client_order_id_is_a_function_of_its_inputs(a, b):
    ida, idb = (client_order_id(s, y, T0 + pd.Timedelta(n, 'ns'), i) for s, y, n, i in (a, b))
    norm = lambda k: (k[0], k[1].upper(), k[2], k[3])
    assert (ida == idb) == (norm(a) == norm(b))


@st.composite
def bar_frames(draw):
    n = draw(st.integers(2, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    low = np.round(rng.uniform(0.05, 20, n), 4)
    high = np.round(low + rng.uniform(0, 2, n), 4)
    o = np.round(low + rng.uniform(0, 1, n) * (high - low), 4).clip(low, high)
    c = np.round(low + rng.uniform(0, 1, n) * (high - low), 4).clip(low, high)
    vol = rng.integers(0, 1_000_000, n)
    nsym = draw(st.integers(1, 3))
    sym = rng.choice(['ABCD', 'WXYZ', 'QRST'][:nsym], n)
    ts = pd.Timestamp('2026-03-02 14:30', tz='UTC') + pd.to_timedelta(np.arange(n) // nsym * 60 + np.arange(n) % nsym, 's')
    return pd.DataFrame(dict(symbol=sym, ts=ts, open=o, high=high, low=low, close=c, volume=vol)), rng


CORRUPTIONS = {
    'not_finite': lambda df, i: df.loc.__setitem__((i, 'close'), np.nan),
    'non_positive_price': lambda df, i: df.loc.__setitem__((i, ['low', 'open', 'close']), [-1.0, df.at[i, 'high'], df.at[i, 'high']]),
    'high_below_low': lambda df, i: df.loc.__setitem__((i, ['high', 'open', 'close']), [df.at[i, 'low'] - 0.01] * 3),
    'open_outside_range': lambda df, i: df.loc.__setitem__((i, 'open'), df.at[i, 'high'] + 0.5),
    'close_outside_range': lambda df, i: df.loc.__setitem__((i, 'close'), df.at[i, 'low'] / 2),
    'negative_volume': lambda df, i: df.loc.__setitem__((i, 'volume'), -1),
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])   # no deadline: CI machines are shared and noisy
@given(bar_frames(), st.sampled_from(sorted(CORRUPTIONS)), st.data())
def test_validator_finds_exactly_the_corrupted_row(frame, rule, data):
    df, _ = frame
    validate_bars(df)                                           # clean frames pass
    i = data.draw(st.integers(0, len(df) - 1))
    bad = df.copy()
    CORRUPTIONS[rule](bad, i)
    with pytest.raises(ValidationError) as e:
        validate_bars(bad)
    assert e.value.rows == [i]
    assert rule in set(e.value.problems.rule)
    assert validate_bars(df).equals(df)                         # the original is untouched


@settings(max_examples=100, deadline=None)
@given(bar_frames(), st.data())
def test_validator_finds_out_of_order_rows(frame, data):
    df, _ = frame
    i = data.draw(st.integers(1, len(df) - 1))
    bad = df.copy()
    prev = bad.index[bad.symbol == bad.at[i, 'symbol']]
    prev = prev[prev < i]
    if len(prev) == 0: return
    bad.loc[i, 'ts'] = bad.loc[prev[-1], 'ts'] - pd.Timedelta(data.draw(st.sampled_from([0, 1])), 's')
    with pytest.raises(ValidationError) as e:
        validate_bars(bad)
    assert e.value.rows == [i]
    assert set(e.value.problems.rule) <= {'unsorted', 'duplicate_timestamp'}
