"""Fuzz the command line (issue 14): whatever CSV rows or option values a user gives, the CLI never shows a Python
traceback (nor an 'unexpected' internal error), exits 0, 1 or 2, and an input it refuses leaves the store's content
unchanged (a hash of every table)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from test_cli_inputs import run, store_hash

pytestmark = pytest.mark.filterwarnings('ignore')


@pytest.fixture(scope='module')
def fuzz_store(tmp_path_factory) -> Path:
    from smallcap.data.synth import SynthConfig, build_store
    d = tmp_path_factory.mktemp('fuzz')
    build_store(d / 'f.duckdb', SynthConfig(seed=9, n_symbols=2, n_sessions=2))
    return d / 'f.duckdb'


def check(r) -> None:
    "No traceback, no internal error, a documented exit status."
    assert 'Traceback' not in r.output and 'unexpected' not in r.output, r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), (r.output, r.exc_info)
    assert r.exit_code in (0, 1, 2), (r.exit_code, r.output)


# CSV rows: headers in several spellings, values good and bad
HEADERS = st.sampled_from([['symbol', 'ts', 'open', 'high', 'low', 'close', 'volume'],
                           ['Symbol', 'Timestamp', 'Open', 'High', 'Low', 'Close', 'Volume'],
                           ['symbol', 'ts', 'open', 'high', 'low', 'Clsoe', 'volume'],
                           ['symbol', 'ts', 'open', 'high', 'low', 'close', 'volume', 'timeframe'],
                           ['symbol', 'ts', 'open', 'high', 'low', 'close']])
NUM = st.one_of(st.floats(-5, 50).map(lambda x: f"{x:.4g}"), st.sampled_from(['nan', 'inf', '-inf']), st.integers(-10, 10**7).map(str),
                st.sampled_from(['', 'n/a', '2.05a', 'abc', '1e400', ' 3 ', '1,5', '0x10', '--1']))
TIME = st.one_of(st.datetimes(min_value=dt.datetime(2026, 11, 5), max_value=dt.datetime(2026, 11, 12))
                 .map(lambda t: t.strftime('%Y-%m-%d %H:%M:%S')),
                 st.sampled_from(['2026-11-09 09:30:00', '2026-11-09T14:31:00Z', '2026-11-09 09:32:00-05:00', '2026-11-09 09:32:30',
                                  '2026-11-01 01:30:00', '2026-03-08 02:30:00', 'not a time', '', '2026-13-01 09:30:00', '09:30']))
SYMBOL = st.sampled_from(['ABCD', 'badx', '', ' ', 'A,B', 'X' * 30, '1234'])
CELL = {'symbol': SYMBOL, 'ts': TIME, 'timeframe': st.sampled_from(['1min', '5min', '7min', 'x', ''])}


@st.composite
def csv_files(draw):
    head = draw(HEADERS)
    n = draw(st.integers(0, 4))
    rows = [[draw(CELL.get(h.lower() if h.lower() in CELL else ('ts' if h == 'Timestamp' else ''), NUM)) for h in head] for _ in range(n)]
    quote = lambda v: f'"{v}"' if ',' in v else v
    return '\n'.join([','.join(head), *(','.join(map(quote, r)) for r in rows)]) + '\n'


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(text=csv_files(), tz=st.sampled_from([None, 'America/New_York', 'UTC', 'America/NewYork']), tf=st.sampled_from([None, '1min', '5min', '1minute']),
       replace=st.booleans())
def test_any_csv_is_ingested_or_refused_cleanly(fuzz_store, tmp_path_factory, text, tz, tf, replace):
    d = tmp_path_factory.getbasetemp()
    csv = d / 'fuzz.csv'; csv.write_text(text)
    before = store_hash(fuzz_store)
    args = ['data', 'ingest', csv, '--table', 'bars', '--store', fuzz_store, *(['--tz', tz] if tz else []), *(['--timeframe', tf] if tf else []),
            *(['--replace'] if replace else [])]
    r = run(*args)
    check(r)
    if r.exit_code != 0: assert store_hash(fuzz_store) == before, r.output


# command-line values
VALUE = st.one_of(st.sampled_from(['5', '0', '-1', '5.5', 'abc', '', '5,10', '[5, 10]', '5;10', 'true', 'null', '1e9', '2025-13-01', 'sma_cross,orb']),
                  st.text(alphabet='az09=,.:-[] ', max_size=8))
KEY = st.sampled_from(['fast', 'slow', 'kind', 'short', 'members', 'fsat', '', 'gap_min'])
PAIR = st.tuples(KEY, VALUE).map(lambda kv: f"{kv[0]}={kv[1]}")
WHEN = st.sampled_from(['2025-10-01', '2025-13-01', '2025-02-30', 'yesterday', '2025-10-01T10:00', '2025-10-01T10:00-04:00', ''])


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(cmd=st.sampled_from(['backtest', 'walkforward', 'scan']), params=st.lists(PAIR, max_size=2), grid=st.lists(PAIR, max_size=2),
       risk=st.lists(st.one_of(PAIR, st.sampled_from(['max_positions: 2', 'max_positions=x', 'sizing: nope', '- 1'])), max_size=2),
       cost=st.lists(st.sampled_from(['participation=0.05', 'participation=2', 'comission_per_share=0', 'x']), max_size=1),
       start=WHEN, engine=st.sampled_from([None, 'vectorbt', 'zipline']), store=st.sampled_from(['ok', 'missing', 'dir']))
def test_any_option_values_give_a_result_or_a_clean_error(fuzz_store, tmp_path_factory, cmd, params, grid, risk, cost, start, engine, store):
    d = tmp_path_factory.getbasetemp()
    where = {'ok': fuzz_store, 'missing': d / 'nope.duckdb', 'dir': d}[store]
    before = store_hash(fuzz_store)
    if cmd == 'scan': args = ['scan', *params, '--at', start or '2025-10-02']
    else:
        args = [cmd, 'sma_cross', *params, '--start', start or '2025-10-01', '--end', '2025-10-03', *[x for c in cost for x in ('--cost', c)],
                *[x for k in risk for x in ('--risk', k)], *(['--engine', engine] if engine else [])]
        if cmd == 'walkforward': args += [*[x for g in grid for x in ('--grid', g)], '--train', '1D', '--test', '1D', '--executor', 'inprocess', '--no-progress',
                                          '--out', str(d / 'wf-out')]
        else: args += ['--out', str(d / 'bt-out')]
    r = run(*args, '--store', where, cwd=d)
    check(r)
    assert store_hash(fuzz_store) == before
