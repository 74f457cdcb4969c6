"""What a user meets on the command line (issue 14): results never overwrite each other, no input is silently
dropped, impossible bars are refused, every error names its row, field or option, and no traceback ever
reaches the user. Every refused input leaves the store's content (a hash of every table) unchanged."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from smallcap.cli import main


def run(*args: str, cwd: Path | None = None):
    "Invoke `smallcap ARGS` in-process; the result carries exit_code and output (stdout + stderr)."
    import os
    old = os.getcwd()
    if cwd is not None: os.chdir(cwd)
    try: return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=True)
    finally: os.chdir(old)


def clean(r, code: int | None = None) -> str:
    "The output of a run that ended without a Python traceback (and with exit status `code`, if given)."
    assert 'Traceback' not in r.output and (r.exception is None or isinstance(r.exception, SystemExit)), (r.output, r.exc_info)
    if code is not None: assert r.exit_code == code, r.output
    return r.output


def store_hash(path: Path) -> str:
    "A content hash of every table of a DuckDB store: per table, its row count and the sum of its rows' hashes (order-free)."
    import duckdb
    con = duckdb.connect(str(path), read_only=True)
    try:
        h = hashlib.sha256()
        for (t,) in sorted(con.sql("SELECT table_name FROM information_schema.tables").fetchall()):
            h.update(repr((t, con.sql(f'SELECT count(*), sum(hash(x)::HUGEINT) FROM "{t}" x').fetchall())).encode())
        return h.hexdigest()
    finally: con.close()


@pytest.fixture(scope='module')
def small(tmp_path_factory) -> Path:
    "A tiny synthetic store (3 symbols, 3 sessions)."
    from smallcap.data.synth import SynthConfig, build_store
    p = tmp_path_factory.mktemp('small') / 'small.duckdb'
    build_store(p, SynthConfig(seed=5, n_symbols=3, n_sessions=4))
    return p


# class 1: nothing a user ran is lost

def _saved(out: str) -> tuple[str, str]:
    line = [l for l in out.splitlines() if l.startswith(('saved: ', 'reused: '))][-1]
    return line.split(':')[0], line.split(': ', 1)[1].split(' (')[0]


def test_results_differing_in_one_input_land_in_two_directories_and_the_same_inputs_reuse_one(small, tmp_path):
    base = ['backtest', 'sma_cross', '--store', small, '--cash', '50000']
    seen = {}
    for label, extra in [('default', []), ('engine', ['--engine', 'backtrader']), ('session', ['--session', 'extended']),
                         ('fill', ['--fill', 'simple', '--risk', 'sizing: fixed_fraction']), ('risk', ['--risk', 'sizing: fixed_fraction']), ('cost', ['--cost', 'participation=0.05'])]:
        how, d = _saved(clean(run(*base, *extra, cwd=tmp_path), 0))
        assert how == 'saved', (label, how)
        seen[label] = d
    assert len(set(seen.values())) == len(seen), seen                     # six inputs, six directories
    assert '-backtrader-' in seen['engine'] and '-extended-' in seen['session']
    how, d = _saved(clean(run(*base, cwd=tmp_path), 0))
    assert (how, d) == ('reused', seen['default'])                         # the same inputs again: the saved one, and it says so
    docs = {k: json.loads((tmp_path / v / 'result.json').read_text())['inputs'] for k, v in seen.items()}
    assert docs['engine']['engine'] == 'backtrader' and docs['default']['engine'] != 'backtrader'


def test_a_different_result_is_never_written_over_another(small, tmp_path):
    out = tmp_path / 'mine'
    clean(run('backtest', 'sma_cross', '--store', small, '--out', out), 0)
    before = (out / 'result.json').read_bytes()
    o = clean(run('backtest', 'sma_cross', '--store', small, '--out', out, '--engine', 'backtrader'), 1)
    assert 'already holds a different backtest' in o and "'engine'" in o and '--out' in o
    assert (out / 'result.json').read_bytes() == before


def test_directory_names_keep_whole_values(small, tmp_path):
    o = clean(run('backtest', 'ensemble', 'members=sma_cross,orb', '--store', small, cwd=tmp_path), 0)
    _, d = _saved(o)
    name = Path(d).name
    assert len(name) < 110
    for piece in name.split('-')[0].split('_'):                            # every k=v kept is a whole value
        if '=' in piece: assert piece.split('=')[1] != ''


def test_walkforward_results_differ_by_windows_and_grid(small, tmp_path):
    base = ['walkforward', 'sma_cross', '--store', small, '--test', '1D', '--executor', 'inprocess', '--no-progress', '--grid', 'fast=5,10']
    a = _saved(clean(run(*base, '--train', '2D', cwd=tmp_path), 0))[1]
    b = _saved(clean(run(*base, '--train', '1D', cwd=tmp_path), 0))[1]
    c = _saved(clean(run(*base[:-1], 'fast=5,20', '--train', '2D', cwd=tmp_path), 0))[1]
    assert len({a, b, c}) == 3 and '-wf-' in a
    assert _saved(clean(run(*base, '--train', '2D', cwd=tmp_path), 0)) == ('reused', a)


# class 2: no input is silently dropped or reinterpreted

@pytest.mark.parametrize('args, names', [
    (['--grid', 'fast=5,10,abc'], "--grid fast='abc': not an integer"),
    (['--grid', 'fast=5,10', '--grid', 'fast=20'], "'fast' is given twice"),
    (['--grid', 'fast=5;10'], "--grid fast='5;10': not an integer"),
    (['--grid', 'fast=5,5'], 'repeats 5'),
    (['--grid', 'fast=5,10,0'], "--grid fast=0: sma_cross.fast=0 is outside"),
    (['--grid', 'fsat=5,10'], "sma_cross has no parameters ['fsat']"),
    (['--grid', 'fast=50,60', '--grid', 'slow=10,20'], 'sma_cross: fast (50) must be < slow (10)'),
    (['fast=5', '--grid', 'fast=5,10'], "['fast'] given both as a parameter and in --grid"),
    (['fast=5.5'], "PARAMS fast='5.5': not an integer"),
    (['--risk', 'max_positions=five'], "--risk max_positions='five': not an integer"),
    (['--risk', 'max_positions=5', '--risk', 'max_positions: 6'], "--risk sets ['max_positions'] twice"),
    (['--cost', 'participation=0.1', '--cost', 'participation=0.2'], "'participation' is given twice"),
    (['--engine', 'zipline'], "'zipline' is not an engine"),
])
def test_bad_values_are_refused_naming_them_and_the_store_is_unchanged(small, tmp_path, args, names):
    h = store_hash(small)
    o = clean(run('walkforward', 'sma_cross', *args, '--store', small, '--train', '2D', '--test', '1D', '--executor', 'inprocess', '--no-progress', cwd=tmp_path))
    assert names in o, o
    assert 'Error' in o and not (tmp_path / 'reports').exists()
    assert store_hash(small) == h


def test_the_trials_are_the_grid_as_given(small, tmp_path):
    o = clean(run('walkforward', 'sma_cross', '--grid', 'fast=5,10,40', '--grid', 'slow=20,30', '--store', small, '--train', '2D', '--test', '1D',
                  '--executor', 'inprocess', '--no-progress', '--json', cwd=tmp_path), 0)
    j = json.loads(o)
    res = json.loads((Path(tmp_path) / j['result'] / 'result.json').read_text())
    assert res['inputs']['grid'] == {'fast': [5, 10, 40], 'slow': [20, 30]} and res['inputs']['combinations'] == 4   # 40 >= 20, 30: removed by fast < slow


def test_list_parameters_and_risk_pairs_mean_what_was_written(small, tmp_path):
    o = clean(run('backtest', 'ensemble', 'members=sma_cross,orb', '--store', small, '--risk', 'max_positions=2', '--risk', 'sizing: fixed_notional',
                  '--json', cwd=tmp_path), 0)
    j = json.loads(o)
    inp = json.loads((Path(tmp_path) / j['result'] / 'result.json').read_text())['inputs']
    assert inp['risk']['max_positions'] == 2 and inp['risk']['sizing'] == 'fixed_notional'
    assert 'sma_cross@' in inp['strategy'] and 'orb@' in inp['strategy']


# class 5: no traceback reaches a user; --store means the same in every command

GOOD_BARS = "symbol,ts,open,high,low,close,volume\nABCD,2026-11-09 09:30:00,2.0,2.1,1.9,2.05,1000\nABCD,2026-11-09 09:31:00,2.05,2.1,2.0,2.08,800\n"


@pytest.fixture
def store_copy(small, tmp_path) -> Path:
    import shutil
    p = tmp_path / 'copy.duckdb'
    shutil.copy(small, p)
    return p


@pytest.mark.parametrize('args, names', [
    (['scan', 'gap_min=0.02', '--at', '2025-13-01'], "--at '2025-13-01' is not a date"),
    (['scan', 'gap_min=0.02', '--at', '2025-11-03T10:00'], "--at '2025-11-03T10:00' has no UTC offset"),
    (['backtest', 'sma_cross', '--start', '2025-02-30'], "--start '2025-02-30' is not a date"),
    (['backtest', 'sma_cross', '--end', 'someday'], "--end 'someday' is neither a date"),
    (['walkforward', 'sma_cross', '--start', '2025-13-01'], "--start '2025-13-01' is not a date"),
    (['data', 'ingest', '{csv}', '--table', 'bars', '--timeframe', '1min', '--tz', 'America/NewYork'], "unknown time zone 'America/NewYork' (--tz); did you mean 'America/New_York'"),
    (['data', 'ingest', '{csv}', '--table', 'bars', '--timeframe', '1min', '--tz', 'Mars/Olympus'], "unknown time zone 'Mars/Olympus' (--tz)"),
])
def test_bad_values_never_give_a_traceback(store_copy, tmp_path, args, names):
    csv = tmp_path / 'good.csv'; csv.write_text(GOOD_BARS)
    h = store_hash(store_copy)
    o = clean(run(*[a.format(csv=csv) for a in args], '--store', store_copy, cwd=tmp_path), 1)
    assert names in o, o
    assert store_hash(store_copy) == h


@pytest.mark.parametrize('cmd', [['data', 'info'], ['scan', 'gap_min=0.02', '--at', '2025-10-02'], ['backtest', 'sma_cross'],
                                 ['walkforward', 'sma_cross', '--train', '2D', '--test', '1D', '--executor', 'inprocess', '--no-progress']])
def test_every_command_that_reads_takes_a_store_file_or_a_parquet_export(small, tmp_path, cmd):
    from smallcap.data.store import TickStore
    pq = tmp_path / 'pq'
    TickStore(small, read_only=True).export_parquet(pq)
    for where in (small, pq):
        clean(run(*cmd, '--store', where, cwd=tmp_path), 0)
    (tmp_path / 'plain').mkdir(); (tmp_path / 'text.duckdb').write_text('not a store')
    for where, msg in ((tmp_path / 'plain', 'is a directory, not a store'), (tmp_path / 'text.duckdb', 'is not a DuckDB store file'),
                       (tmp_path / 'nope.duckdb', 'no store at')):
        o = clean(run(*cmd, '--store', where, cwd=tmp_path), 1)
        assert msg in o and str(where) in o, o


def test_writing_to_a_parquet_export_is_refused_and_it_is_unchanged(small, tmp_path):
    from smallcap.data.store import TickStore
    pq = tmp_path / 'pq'
    TickStore(small, read_only=True).export_parquet(pq)
    before = sorted((p.relative_to(pq), p.read_bytes()) for p in pq.rglob('*') if p.is_file())
    csv = tmp_path / 'good.csv'; csv.write_text(GOOD_BARS)
    o = clean(run('data', 'ingest', csv, '--table', 'bars', '--timeframe', '1min', '--tz', 'America/New_York', '--store', pq), 1)
    assert 'is a Parquet export (read-only)' in o and '--store' in o
    assert sorted((p.relative_to(pq), p.read_bytes()) for p in pq.rglob('*') if p.is_file()) == before


def test_an_unexpected_exception_is_one_line_not_a_traceback(monkeypatch):
    import smallcap.cli as cli
    def boom(*a, **k): raise ZeroDivisionError('division by zero')
    monkeypatch.setattr(cli, '_settings', boom)
    o = clean(run('config'), 1)
    assert 'unexpected ZeroDivisionError: division by zero' in o and 'SMALLCAP_DEBUG' in o


# class 3: bars that cannot exist are refused at ingest; stored rows can be replaced or deleted

def _bars_csv(path: Path, *rows: str) -> Path:
    path.write_text("symbol,ts,open,high,low,close,volume\n" + ''.join(f"{r}\n" for r in rows))
    return path


@pytest.mark.parametrize('when, tf, rule', [
    ('2026-11-07 09:30:00', '1min', 'outside_sessions'),        # a Saturday
    ('2026-11-26 10:00:00', '1min', 'outside_sessions'),        # Thanksgiving
    ('2026-11-27 18:00:00', '1min', 'outside_sessions'),        # after the after-hours of a half day (17:00)
    ('2026-11-09 20:30:00', '1min', 'outside_sessions'),        # after 20:00
    ('2026-11-09 03:59:00', '1min', 'outside_sessions'),        # before the 04:00 premarket
    ('2026-11-09 09:32:30', '1min', 'off_grid'),
    ('2026-11-09 09:47:00', '5min', 'off_grid'),
    ('2026-11-09 19:00:00', '1d', 'daily_off_session'),
    ('2026-11-08 00:00:00', '1d', 'daily_off_session'),         # a Sunday's daily bar
])
def test_impossible_bars_are_refused_naming_the_row_and_the_store_is_unchanged(store_copy, tmp_path, when, tf, rule):
    csv = _bars_csv(tmp_path / 'b.csv', 'BADX,2026-11-09 09:30:00,2.0,2.1,1.9,2.05,100', f'BADX,{when},2.0,2.1,1.9,2.05,100')
    h = store_hash(store_copy)
    if tf == '1d': csv = _bars_csv(tmp_path / 'b.csv', 'BADX,2026-11-10 00:00:00,2.0,2.1,1.9,2.05,100', f'BADX,{when},2.0,2.1,1.9,2.05,100')
    o = clean(run('data', 'ingest', csv, '--table', 'bars', '--timeframe', tf, '--tz', 'America/New_York', '--store', store_copy), 1)
    assert rule in o and 'BADX' in o and when[:16] in o, o
    assert store_hash(store_copy) == h


def test_stored_rows_are_replaced_or_deleted_from_the_command_line(store_copy, tmp_path):
    a = _bars_csv(tmp_path / 'a.csv', 'BADX,2026-11-09 09:30:00,2.0,2.1,1.9,2.05,100', 'BADX,2026-11-09 09:31:00,2.0,2.1,1.9,2.05,100')
    b = _bars_csv(tmp_path / 'b.csv', 'BADX,2026-11-09 09:30:00,2.0,2.2,1.9,2.05,100')
    bad = _bars_csv(tmp_path / 'bad.csv', 'BADX,2026-11-09 09:30:00,2.0,2.2,1.9,2.05,100', 'BADX,2026-11-07 09:30:00,2.0,2.1,1.9,2.05,100')
    ing = lambda f, *x: run('data', 'ingest', f, '--table', 'bars', '--timeframe', '1min', '--tz', 'America/New_York', '--store', store_copy, *x)
    assert 'written' in clean(ing(a), 0)
    h = store_hash(store_copy)
    o = clean(ing(b), 1)
    assert 'conflicts_with_stored' in o and '--replace' in o and store_hash(store_copy) == h
    o = clean(ing(bad, '--replace'), 1)                                  # replacing is validated like ingesting: nothing half-written
    assert 'outside_sessions' in o and store_hash(store_copy) == h
    assert '1 written' in clean(ing(b, '--replace'), 0)
    from smallcap.data.store import TickStore
    got = TickStore(store_copy, read_only=True).bars('BADX', session=None)
    assert got.high.tolist() == [2.2, 2.1]
    h = store_hash(store_copy)
    for args, msg in ((['--symbols', ','], "',' names no symbol"), (['--symbols', 'BADX', '--start', '2026-13-01'], "--start '2026-13-01' is not a date"),
                      (['--symbols', 'BADX', '--timeframe', '7min'], "must divide one day")):
        assert msg in clean(run('data', 'delete', '--table', 'bars', *args, '--store', store_copy)), args
        assert store_hash(store_copy) == h
    assert '1 rows deleted' in clean(run('data', 'delete', '--table', 'bars', '--symbols', 'badx', '--start', '2026-11-09T09:31-05:00', '--store', store_copy), 0)
    assert TickStore(store_copy, read_only=True).bars('BADX', session=None).high.tolist() == [2.2]


# class 4: every error names its line, field or option, with the value as written

H = "symbol,ts,open,high,low,close,volume\n"
OK = "BADX,2026-11-09 09:30:00,2.0,2.1,1.9,2.05,100\n"


@pytest.mark.parametrize('body, opts, names', [
    (H + OK + "BADX,2026-11-09 09:31:00,2.0,2.1,1.9,2.05a,100\n", [], ["not_a_number [close]", "line 3 (BADX 2026-11-09 09:31:00): '2.05a'"]),
    (H + OK + "BADX,not a time,2.0,2.1,1.9,2.05,100\n", [], ["not_a_time [ts]", "line 3 (BADX not a time): 'not a time'"]),
    (H + "BADX,2026-11-09T09:30:00-05:00,2.0,2.1,1.9,2.05,100\nBADX,2026-11-09 09:31:00,2.0,2.1,1.9,2.05,100\n", ['--no-tz'],
     ["ts has no UTC offset (other rows have one)", '--tz', 'line 3']),
    (H + OK + "BADX,2026-11-09 09:32:00,-2.0,2.1,1.9,2.05,100\n", [], ["non_positive_price", "line 3 (BADX 2026-11-09 09:32:00)"]),   # a store rule, in the file's terms
    (H + OK + "BADX,2026-11-09 09:31:00,2.0,2.1,1.9,2.05,1.5\n", [], ["not_integer [volume]", "line 3"]),
    (H, [], ["has a header but no rows"]),
    ("Symbol,Timestamp,Open,High,Low,Clsoe,Vol\n" + OK, [], ["column 'Clsoe' is not a bars column (did you mean 'close'? --map Clsoe=close)"]),
    (H + OK, ['--no-timeframe'], ['--timeframe']),
])
def test_file_errors_name_the_line_and_the_value_as_written(store_copy, tmp_path, body, opts, names):
    csv = tmp_path / 'f.csv'; csv.write_text(body)
    h = store_hash(store_copy)
    args = ['data', 'ingest', csv, '--table', 'bars', '--store', store_copy]
    if '--no-tz' not in opts: args += ['--tz', 'America/New_York']
    if '--no-timeframe' not in opts: args += ['--timeframe', '1min']
    o = clean(run(*args), 1)
    for n in names: assert n in o, (n, o)
    assert 'row -1' not in o and o.count('no rows') <= 1
    assert store_hash(store_copy) == h


def test_vendor_headers_and_date_time_columns_need_no_mapping(store_copy, tmp_path):
    csv = tmp_path / 'v.csv'
    csv.write_text("Date,Time,Ticker,Open,High,Low,Close,Volume\n2026-11-09,09:30:00,VNDR,2.00,2.10,1.90,2.05,1000\n")
    assert '1 written' in clean(run('data', 'ingest', csv, '--table', 'bars', '--timeframe', '1min', '--tz', 'America/New_York', '--store', store_copy), 0)
    from smallcap.data.store import TickStore
    import pandas as pd
    assert TickStore(store_copy, read_only=True).bars('VNDR', session=None).ts.tolist() == [pd.Timestamp('2026-11-09 14:30', tz='UTC')]


# class 6: honest defaults

def test_backtests_use_adjusted_prices_by_default(small, tmp_path):
    from smallcap.data.store import TickStore
    ca = TickStore(small, read_only=True).corporate_actions()
    assert len(ca) and (ca.kind == 'split').any()                            # the store has a split to adjust for
    out = {}
    for flag in ([], ['--no-adjust']):
        j = json.loads(clean(run('backtest', 'sma_cross', '--store', small, '--session', 'all', '--json', *flag, cwd=tmp_path), 0))
        out[bool(flag)] = json.loads((tmp_path / j['result'] / 'result.json').read_text())['inputs']['data']
    assert out[False]['adjust'] is True and out[True]['adjust'] is False
    import pandas as pd
    b = {k: pd.read_parquet(tmp_path / 'reports' / 'results' / d / 'benchmark.parquet')['benchmark'] for k, d in
         ((k, next(p.name for p in (tmp_path / 'reports' / 'results').iterdir() if json.loads((p / 'result.json').read_text())['inputs']['data']['adjust'] is (not k))) for k in (False, True))}
    jump = {k: float(v.pct_change().abs().max()) for k, v in b.items()}
    assert jump[True] > 5 * jump[False], jump                                 # the unadjusted buy & hold jumps at the split


def test_walkforward_uses_adjusted_prices_and_says_when_it_cannot(small, tmp_path):
    base = ['walkforward', 'sma_cross', '--store', small, '--train', '2D', '--test', '1D', '--no-progress', '--grid', 'fast=5,10']
    j = json.loads(clean(run(*base, '--json', cwd=tmp_path), 0))
    d = json.loads((tmp_path / j['result'] / 'result.json').read_text())['inputs']['data']
    assert d['adjust'] is True and d['store'] == small.name and d['source'] == 'store'
    o = clean(run(*base, '--executor', 'process', cwd=tmp_path), 1)
    assert '--no-adjust' in o and '--executor process' in o


def test_a_strategy_that_cannot_trade_in_the_session_warns_before_it_runs(small, tmp_path):
    o = clean(run('backtest', 'gap_and_go', '--store', small, cwd=tmp_path), 0)
    assert 'warning: gap_and_go gives no entry signal' in o and '--session extended' in o
    assert o.index('warning:') < o.index('saved:')


def test_store_bars_and_parity_work_with_their_own_defaults(small):
    import datetime as dt
    from smallcap.backtest.parity import parity
    from smallcap.data.panel import Panel
    from smallcap.data.store import TickStore
    st = TickStore(small, read_only=True)
    assert st.bars(None, dt.date(2025, 10, 2), dt.date(2025, 10, 3)).equals(st.bars(None, '2025-10-02', '2025-10-03'))
    rep = parity('orb', Panel.from_bars(st.bars(None, '2025-10-01', '2025-10-03')), store=st)
    assert rep.vectorbt.inputs['risk']['sizing'] == 'fixed_notional'


# class 8: your own strategies everywhere

MINE = '''from dataclasses import dataclass
from typing import ClassVar
from smallcap.strategy.base import param, register
from smallcap.strategy.library import SmaCross

@register
@dataclass(frozen=True)
class Slower(SmaCross):
    "A slower crossover of my own."
    name: ClassVar[str] = 'slower_cross'
    slow: int = param(40, grid=[40, 60], low=2, doc='slow average length')
'''


def test_a_user_module_makes_its_strategies_usable_by_every_command(small, tmp_path, monkeypatch):
    import subprocess, sys, os
    monkeypatch.setenv('SMALLCAP_STRATEGY_MODULES', '')                    # restored after the test (--module sets it for workers)
    mod = tmp_path / 'mine.py'; mod.write_text(MINE)
    o = clean(run('--module', mod, 'strategies', cwd=tmp_path), 0)
    assert 'slower_cross: A slower crossover of my own.' in o and 'slow' in o
    o = clean(run('--module', mod, 'backtest', 'slower_cross', 'fast=5', '--store', small, cwd=tmp_path), 0)
    assert 'saved:' in o and 'slower_cross' in o
    o = clean(run('--module', mod, 'walkforward', 'slower_cross', '--grid', 'fast=5,10', '--store', small, '--train', '2D', '--test', '1D', '--no-progress', cwd=tmp_path), 0)
    assert 'slower_cross walk-forward' in o
    # worker processes find it through the environment the command sets (a fresh interpreter, as a process pool starts)
    code = "from smallcap.strategy.base import get_strategy; print(get_strategy('slower_cross').slow)"
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120, env={**os.environ, 'SMALLCAP_STRATEGY_MODULES': str(mod)})
    assert r.stdout.strip() == '40', r.stderr
    assert os.environ.get('SMALLCAP_STRATEGY_MODULES', '').endswith(str(mod.resolve()))      # what --module set for the workers
    o = clean(run('--module', tmp_path / 'missing.py', 'strategies'), 1)
    assert 'missing.py does not exist (--module)' in o
    (tmp_path / 'broken.py').write_text('import no_such_package_xyz\n')
    assert 'failed to import: ModuleNotFoundError' in clean(run('--module', tmp_path / 'broken.py', 'backtest', 'x'), 1)


# class 7: reports keep their provenance

def test_a_report_needs_neither_the_store_nor_the_cli(small, tmp_path):
    import html as _html, re, shutil
    st = tmp_path / 'elsewhere' / 'mine.duckdb'; st.parent.mkdir(); shutil.copy(small, st)
    j = json.loads(clean(run('backtest', 'sma_cross', 'fast=5', 'slow=20', '--store', st, '--session', 'all', '--json', cwd=tmp_path), 0))
    rdir = tmp_path / j['result']
    assert (rdir / 'sample_bars.parquet').exists()                          # the charts' bars travel with the result
    shutil.rmtree(st.parent)                                                 # the store is gone
    o = clean(run('report', rdir, '--out', tmp_path / 'reports', cwd=tmp_path), 0)
    html = (tmp_path / 'reports' / f"{rdir.name}.html").read_text()
    assert 'were not saved with this result' not in html and 'charts' in o and ' 0 charts' not in o
    py = _html.unescape(re.search(r"<pre class=.py.>(.*?)</pre>", html, re.S).group(1))
    assert "get_strategy('sma_cross', fast=5, slow=20" in py and "TickStore('mine.duckdb'" in py and 'adjust=True' in py
    compile(py, 'reproduce', 'exec')


# class 9: settings that match the code

def test_config_shows_the_file_in_effect_typed_values_and_names_environments(tmp_path, monkeypatch):
    cfg = tmp_path / 'elsewhere.yaml'; cfg.write_text('ib_port: 4002\nenvironments:\n  paper: {log_level: DEBUG}\n')
    monkeypatch.setenv('SMALLCAP_CONFIG', str(cfg))
    j = json.loads(clean(run('config', '--json', cwd=tmp_path), 0))
    assert j['config_file'] == str(cfg) and j['ib_port'] == 4002 and j['alpaca_paper'] is True and j['alpaca_url'] is None
    cfg.write_text('research:\n  log_level: DEBUG\n')
    o = clean(run('config', cwd=tmp_path), 1)
    assert "unknown setting(s) ['research']" in o and "'environments:' section" in o


def test_the_default_store_error_points_at_the_sample_store(tmp_path, monkeypatch):
    (tmp_path / 'data').mkdir(); (tmp_path / 'data' / 'sample.duckdb').write_bytes(b'')
    monkeypatch.delenv('SMALLCAP_CONFIG', raising=False); monkeypatch.delenv('SMALLCAP_STORE_PATH', raising=False); monkeypatch.delenv('SMALLCAP_DATA_DIR', raising=False)
    o = clean(run('data', 'info', cwd=tmp_path), 1)
    assert 'no store at' in o and 'smallcap.duckdb' in o and '--store' in o and 'sample.duckdb' in o


def test_the_docs_describe_only_what_exists():
    import re
    from conftest import ROOT
    readme = (ROOT / 'README.md').read_text()
    assert 'trading through Alpaca' not in readme and 'not built yet' in readme and 'environments:' in readme
    assert 'sample.duckdb' in (ROOT / 'data' / 'README.md').read_text()
    index = json.loads((ROOT / 'nbs' / 'index.ipynb').read_text())
    text = ''.join(''.join(c['source']) for c in index['cells'])
    for mod in ('ml', 'broker', 'live'):
        import importlib.util
        if importlib.util.find_spec(f'smallcap.{mod}') is None:                # not built: the docs say so where they name it
            assert all('planned' in l for l in text.splitlines() if f'`{mod}.' in l), mod
    assert 'to paper and live trading.' not in text
