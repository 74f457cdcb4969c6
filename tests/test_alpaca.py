"""smallcap.data.alpaca with the real alpaca-py client against a loopback Alpaca market-data server (tests/alpaca_server.py):
paging, feeds, retries with backoff on 429/5xx, exhausted retries, malformed pages, credentials and secrets."""
from __future__ import annotations

import logging
import math
import socket
import time
import traceback

import numpy as np
import pandas as pd
import pytest

from alpaca_server import AlpacaServer
from conftest import run_py
from smallcap.config import Settings
from smallcap.core import BrokerError, ClockError, ConfigError, DataError, SmallcapError, ValidationError
from smallcap.data.alpaca import AlpacaHistory, raw_to_frame
from smallcap.data.store import TickStore

KEY, SECRET = 'PKTEST4Q2Z', 'sk-SECRET-do-not-leak-9f8e7d'
PAGE = 97                                                    # server page size: not a divisor of anything here
DAY = ('2026-03-02T14:30:00Z', '2026-03-02T21:00:00Z')
TWO_DAYS = ('2026-03-02T00:00:00Z', '2026-03-04T00:00:00Z')
SYMS = ['ABCD', 'QRST', 'WXYZ']
KEYS = {'bars': ['symbol', 't'], 'trades': ['symbol', 'i'], 'quotes': ['symbol', 't', 'ax', 'ap', 'as', 'bx', 'bp', 'bs']}


@pytest.fixture
def server():
    with AlpacaServer(key_id=KEY, secret_key=SECRET, page_max=PAGE, trades_per_day=600, quotes_per_day=600) as srv:
        yield srv


@pytest.fixture
def settings(server, tmp_path):
    return Settings(root=tmp_path, alpaca_key_id=KEY, alpaca_secret_key=SECRET, alpaca_data_url=server.url)


def history(settings, **kw):
    return AlpacaHistory(settings, **{'feed': 'iex', 'backoff': 0.001, 'max_wait': 0.01, **kw})


@pytest.fixture
def hist(settings):
    return history(settings)


def store_state(st):
    "Everything an unchanged store must keep: row counts, sources and the ingest log."
    s = st.summary()
    with st.connect() as con:
        ingests = con.sql("SELECT count(*) FROM db.ingests").fetchall()[0][0]
    return {k: (v['rows'], tuple(v['sources'])) for k, v in s.items() if k != 'meta'}, ingests


# -- paging ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('kind', ['bars', 'trades', 'quotes'])
@pytest.mark.parametrize('feed', ['iex', 'sip'])
def test_every_page_fetched_once_no_gaps_no_duplicates(server, settings, kind, feed):
    h = history(settings, feed=feed)
    df = h.fetch(kind, SYMS + ['NOPE'], *TWO_DAYS)
    held = server.held(kind, SYMS, *TWO_DAYS, feed=feed)
    pages = math.ceil(len(held) / PAGE)
    assert pages >= 3
    # one request per page, each page asked once, tokens chained, limit and feed sent as Alpaca expects
    reqs = server.requests
    assert len(reqs) == pages == h.stats['pages'] == h.stats['requests']
    assert reqs[0]['page_token'] is None and all(r['page_token'] for r in reqs[1:])
    assert len({r['page_token'] for r in reqs[1:]}) == pages - 1
    assert {r['feed'] for r in reqs} == {feed} and {r['limit'] for r in reqs} == {'10000'}
    assert {r['params']['symbols'] for r in reqs} == {'ABCD,QRST,WXYZ,NOPE'}
    # the frame holds exactly what the server holds
    if kind == 'quotes':
        held = held[(held['bp'] > 0) & (held['ap'] > 0) & (held['bp'] <= held['ap'])]
        assert h.stats['records'] > len(held)                      # the one-sided quotes were received, then dropped
    assert len(df) == len(held) == h.stats['rows']
    assert not df.duplicated().any()
    assert df['symbol'].tolist() == held['symbol'].tolist()
    assert df['ts'].dt.as_unit('ns').astype('int64').tolist() == held['t'].tolist()
    price = {'bars': ('close', 'c'), 'trades': ('price', 'p'), 'quotes': ('bid', 'bp')}[kind]
    assert np.array_equal(df[price[0]].to_numpy(), held[price[1]].to_numpy())
    if kind == 'trades':
        assert df['id'].tolist() == held['i'].tolist() and df['size'].dtype == 'Int64'
        assert (set(df['exchange']) == {'V'}) == (feed == 'iex')
    if kind == 'bars':
        assert df['volume'].dtype == 'Int64' and set(df['timeframe']) == {'1min'}


def test_feed_changes_the_data_and_is_recorded_in_the_store(server, settings, tmp_path):
    st = TickStore(tmp_path / 'feeds.duckdb')
    iex = history(settings, feed='iex').load(st, 'trades', 'ABCD', *DAY)
    assert st.summary()['trades']['sources'] == ['alpaca:iex']
    sip = history(settings, feed='sip').load(st, 'trades', 'ABCD', *DAY)
    assert sip.written > iex.written > 0
    with st.connect() as con:
        by = dict(con.sql("SELECT source, count(*) FROM db.trades GROUP BY source").fetchall())
    assert by == {'alpaca:iex': iex.written, 'alpaca:sip': sip.written}
    assert [r['feed'] for r in server.requests if r['status'] == 200][-1] == 'sip'


def test_default_feed_comes_from_settings(server, tmp_path):
    s = Settings(root=tmp_path, alpaca_key_id=KEY, alpaca_secret_key=SECRET, alpaca_data_url=server.url + '/v2/', alpaca_feed='sip')
    h = AlpacaHistory(s)
    assert h.feed == 'sip' and h.source == 'alpaca:sip' and h.url == server.url
    h.bars('ABCD', *DAY)
    assert server.requests[0]['feed'] == 'sip'


def test_bars_request_and_timeframes(server, hist):
    df = hist.bars(['WXYZ', 'ABCD'], '2026-03-02', '2026-03-03', timeframe='15min')
    p = server.requests[0]['params']
    assert p['timeframe'] == '15Min' and p['adjustment'] == 'raw' and p['symbols'] == 'WXYZ,ABCD'
    assert pd.Timestamp(p['start']) == pd.Timestamp('2026-03-02 00:00', tz='America/New_York')
    assert pd.Timestamp(p['end']) == pd.Timestamp('2026-03-04 00:00', tz='America/New_York') - pd.Timedelta('1us')
    assert len(df) == len(server.held('bars', 'ABCD,WXYZ', p['start'], p['end'], feed='iex', timeframe='15Min'))
    assert set(df['timeframe']) == {'15min'} and (df['ts'].dt.minute % 15 == 0).all()
    daily = hist.bars('ABCD', '2026-03-02', '2026-03-03', timeframe='1d')
    assert len(daily) == 2 and (daily['ts'].dt.tz_convert('America/New_York').dt.hour == 0).all()
    with pytest.raises(ConfigError, match='no second bars'): hist.bars('ABCD', *DAY, timeframe='1s')
    with pytest.raises(ClockError, match='naive'): hist.bars('ABCD', '2026-03-02 09:30', '2026-03-02 16:00')
    with pytest.raises(ConfigError, match='before start'): hist.bars('ABCD', DAY[1], DAY[0])


def test_symbols_are_chunked_into_several_requests(server, settings):
    h = history(settings, symbols_per_request=2)
    df = h.trades(['abcd', 'QRST', 'WXYZ', 'NOPE', 'ABCD'], *DAY)
    assert sorted({r['params']['symbols'] for r in server.requests}) == ['ABCD,QRST', 'WXYZ,NOPE']
    assert len(df) == len(server.held('trades', SYMS, *DAY, feed='iex')) and sorted(df['symbol'].unique()) == SYMS


def test_no_data_is_an_empty_frame_in_the_schema(server, hist, tmp_path):
    df = hist.trades('NOPE', *DAY)
    assert df.empty and list(df.columns) == ['symbol', 'ts', 'price', 'size', 'exchange', 'conditions', 'id']
    assert hist.load(TickStore(tmp_path / 'e.duckdb'), 'quotes', 'NOPE', *DAY).rows == 0


def test_load_is_one_idempotent_ingest(server, hist, tmp_path):
    st = TickStore(tmp_path / 'idem.duckdb')
    first = hist.load(st, 'quotes', SYMS, *DAY)
    assert first.written == first.rows == hist.stats['rows'] > PAGE
    again = hist.load(st, 'quotes', SYMS, *DAY)
    assert again.written == 0 and again.duplicates == again.rows == first.rows
    with st.connect() as con:
        assert con.sql("SELECT count(*) FROM db.ingests WHERE tbl = 'quotes'").fetchall()[0][0] == 2
    bars = hist.load(st, 'bars', SYMS, *TWO_DAYS, timeframe='5min')
    got = st.bars(SYMS, TWO_DAYS[0], TWO_DAYS[1], timeframe='5min', session=None)
    assert bars.written == len(got) == len(server.held('bars', SYMS, *TWO_DAYS, feed='iex', timeframe='5Min'))


# -- retries ----------------------------------------------------------------------------------------------------

def test_429_retried_with_exponential_backoff(server, settings):
    h = history(settings, backoff=0.05, max_wait=1.0)
    server.fail(429, times=3)
    t0 = time.monotonic(); df = h.bars(SYMS, *DAY); took = time.monotonic() - t0
    pages = math.ceil(len(server.held('bars', SYMS, *DAY, feed='iex')) / PAGE)
    assert server.hits(status=429) == 3 and server.hits(status=200) == pages and server.hits() == pages + 3
    assert h.stats['retries'] == 3 and h.stats['requests'] == pages + 3 and len(df) > 0
    assert took >= 0.05 + 0.10 + 0.20                             # 0.05 * 2**k, k = 0, 1, 2 (plus jitter)
    assert [r['status'] for r in server.requests[:4]] == [429, 429, 429, 200]


@pytest.mark.parametrize('status', [500, 502, 503, 504])
def test_5xx_mid_paging_retries_only_that_page(server, hist, status):
    server.fail(status, times=2, after=2)                        # pages 1 and 2 fine, page 3 fails twice
    df = hist.trades(SYMS, *TWO_DAYS)
    held = server.held('trades', SYMS, *TWO_DAYS, feed='iex')
    assert len(df) == len(held) and not df.duplicated().any()
    tokens = [r['page_token'] for r in server.requests]
    assert server.hits(status=status) == 2 and tokens[2] == tokens[3] == tokens[4]     # the same page asked again
    assert len(tokens) == len(set(tokens)) + 2 and hist.stats['retries'] == 2


def test_retry_after_is_honoured_but_capped(server, settings):
    server.fail(429, times=1, retry_after=1)
    t0 = time.monotonic(); history(settings, backoff=0.001, max_wait=5).trades('ABCD', *DAY)
    assert 1.0 <= time.monotonic() - t0 < 3
    server.reset(); server.fail(429, times=1, retry_after=30)
    t0 = time.monotonic(); history(settings, backoff=0.001, max_wait=0.2).trades('ABCD', *DAY)
    assert time.monotonic() - t0 < 2                              # max_wait caps what the server asks for
    assert server.hits(status=429) == 1


def test_alpaca_py_own_retry_is_off(server, settings):
    "alpaca-py alone would sleep 3 s and retry a 429; with max_retries=0 there is exactly one request."
    server.fail(429, times=1)
    t0 = time.monotonic()
    with pytest.raises(BrokerError, match='HTTP 429'): history(settings, max_retries=0).bars('ABCD', *DAY)
    assert server.hits() == 1 and time.monotonic() - t0 < 1


def test_timeouts_and_dropped_connections_are_retried(server, settings):
    server.stall(3, times=1, after=1)                            # page 2 hangs: the request times out and is retried
    h = history(settings, timeout=0.3)
    t0 = time.monotonic(); df = h.trades(SYMS, *DAY); took = time.monotonic() - t0
    assert len(df) == len(server.held('trades', SYMS, *DAY, feed='iex'))
    assert sum(1 for r in server.requests if r.get('stalled')) == 1 and h.stats['retries'] == 1 and took < 2.5
    tokens = [r['page_token'] for r in server.requests]
    assert tokens[1] == tokens[2] and len(tokens) == len(set(tokens)) + 1
    with socket.socket() as s:                                   # a port nobody listens on
        s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    dead = Settings(root=settings.root, alpaca_key_id=KEY, alpaca_secret_key=SECRET, alpaca_data_url=f"http://127.0.0.1:{port}")
    with pytest.raises(BrokerError, match=r'could not reach .* after 3 attempt'):
        history(dead, max_retries=2).bars('ABCD', *DAY)


# -- failures leave the store unchanged -----------------------------------------------------------------------------

@pytest.fixture
def filled(hist, tmp_path):
    st = TickStore(tmp_path / 'filled.duckdb')
    hist.load(st, 'bars', 'ABCD', *DAY); hist.load(st, 'trades', 'ABCD', *DAY)
    return st


@pytest.mark.parametrize('kind', ['bars', 'trades', 'quotes'])
def test_exhausted_retries_clear_error_store_unchanged(server, hist, filled, kind):
    before = store_state(filled)
    server.reset(); server.fail(503, times=100, after=2)
    with pytest.raises(BrokerError) as e: hist.load(filled, kind, SYMS, *TWO_DAYS)
    msg = str(e.value)
    assert 'HTTP 503' in msg and 'retries exhausted' in msg and 'after 6 attempts' in msg and 'page 3' in msg
    assert server.hits() == 2 + 6                                # two good pages, then 1 try + 5 retries
    assert store_state(filled) == before


@pytest.mark.parametrize('how,kind,expect,err', [
    ('truncated', 'bars', 'is not valid JSON', DataError),
    ('truncated', 'quotes', 'is not valid JSON', DataError),
    ('missing_field', 'bars', "'c' (close) is missing", ValidationError),
    ('missing_field', 'trades', "'p' (price) is missing", ValidationError),
    ('missing_field', 'quotes', "'bp' (bid) is missing", ValidationError),
    ('not_a_number', 'trades', "'s' (size) is not a whole number", ValidationError),
    ('no_data_key', 'trades', "has no 'trades' data", DataError),
])
def test_malformed_page_clear_error_store_unchanged(server, hist, filled, how, kind, expect, err):
    before = store_state(filled)
    server.reset(); server.corrupt(how, after=2)
    with pytest.raises(err) as e: hist.load(filled, kind, SYMS, *TWO_DAYS)
    assert expect in str(e.value) and isinstance(e.value, DataError)
    tokens = [r['page_token'] for r in server.requests]
    assert len(tokens) == len(set(tokens))                       # a malformed page is not retried
    if err is DataError:                                         # unreadable: paging stops at the page
        assert 'page 3' in str(e.value) and server.hits() == 3
    else:                                                        # readable but wrong: found when the pages are converted
        assert e.value.problems['symbol'].notna().all() and len(e.value.problems) == 1
        assert server.hits() == math.ceil(len(server.held(kind, SYMS, *TWO_DAYS, feed='iex')) / PAGE)
    assert store_state(filled) == before


def test_refused_requests_are_not_retried(server, settings, tmp_path):
    wrong = Settings(root=tmp_path, alpaca_key_id=KEY, alpaca_secret_key='sk-wrong', alpaca_data_url=server.url)
    with pytest.raises(BrokerError, match=r'HTTP 401 .*APCA_API_KEY_ID'): history(wrong).bars('ABCD', *DAY)
    assert server.hits() == 1
    server.sip_allowed = False
    with pytest.raises(BrokerError, match=r"HTTP 403 .*feed='iex' is free"): history(settings, feed='sip').bars('ABCD', *DAY)
    assert server.hits() == 2


# -- credentials and secrets -----------------------------------------------------------------------------------------

def test_missing_credentials_is_a_config_error(monkeypatch, tmp_path):
    for k in ('APCA_API_KEY_ID', 'APCA_API_SECRET_KEY', 'SMALLCAP_ALPACA_KEY_ID', 'SMALLCAP_ALPACA_SECRET_KEY', 'SMALLCAP_CONFIG'):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match='APCA_API_KEY_ID and APCA_API_SECRET_KEY'): AlpacaHistory()
    monkeypatch.setenv('APCA_API_KEY_ID', KEY)
    with pytest.raises(ConfigError, match='credentials are missing'): AlpacaHistory()
    monkeypatch.setenv('SMALLCAP_ALPACA_SECRET_KEY', SECRET)
    assert AlpacaHistory().source == 'alpaca:iex'                 # the environment is enough


def test_secrets_never_in_errors_logs_or_reprs(server, settings, caplog, tmp_path):
    caplog.set_level(logging.DEBUG)                               # every logger, urllib3's request lines included
    h = history(settings)
    texts = [repr(h), str(h.stats)]
    def run(fn):
        try: fn()
        except SmallcapError as e: texts.extend([str(e), repr(e), ''.join(traceback.format_exception(e))])
        else: raise AssertionError('should fail')
    server.fail(429, times=2); h.bars('ABCD', *DAY)
    server.fail(500, times=10); run(lambda: h.bars('ABCD', *DAY))
    server.reset(); server.corrupt('truncated'); run(lambda: h.trades('ABCD', *DAY))
    server.reset(); server.corrupt('missing_field', after=0); run(lambda: h.quotes('ABCD', *DAY))
    run(lambda: history(Settings(root=tmp_path, alpaca_key_id=KEY, alpaca_secret_key=SECRET + 'x', alpaca_data_url=server.url)).bars('ABCD', *DAY))
    texts.append(caplog.text)
    assert 'retry 1 of 5' in caplog.text and 'HTTP 429' in caplog.text
    for t in texts: assert SECRET not in t
    assert all(SECRET not in str(r) for r in server.requests)


# -- conversion and import cost ------------------------------------------------------------------------------------

def test_conversion_is_vectorised_enough():
    n = 200_000
    t = pd.date_range('2026-03-02 14:30', periods=n, freq='117ms', tz='UTC').strftime('%Y-%m-%dT%H:%M:%S.%fZ')
    recs = [{'t': a, 'x': 'V', 'p': 3.01, 's': 100, 'c': ['@', 'I'], 'i': k, 'z': 'C'} for k, a in enumerate(t)]
    t0 = time.perf_counter(); df = raw_to_frame('trades', {'ABCD': recs[:n // 2], 'WXYZ': recs[n // 2:]}); took = time.perf_counter() - t0
    assert len(df) == n and df['conditions'].iloc[0] == '@,I' and took < 5, took


def test_import_does_not_load_alpaca():
    r = run_py("import sys, smallcap.data.alpaca as a; print(sorted(m for m in sys.modules if m.split('.')[0] == 'alpaca'))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[]'
