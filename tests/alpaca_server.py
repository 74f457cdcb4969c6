"""A loopback stand-in for Alpaca's market-data API v2 (historical stock bars, trades and quotes).

It answers the multi-symbol endpoints alpaca-py calls (`GET /v2/stocks/bars|trades|quotes?symbols=...`) in
Alpaca's wire format: `{"bars": {"SYM": [{"t", "o", "h", "l", "c", "v", "n", "vw"}, ...]}, "next_page_token": ...}`,
trades `{"t", "x", "p", "s", "c", "i", "z"}`, quotes `{"t", "ax", "ap", "as", "bx", "bp", "bs", "c", "z"}`,
RFC-3339 timestamps with up to nanosecond digits. Data are generated deterministically from a seed, per feed
(IEX is a different, thinner tape than SIP), and served in pages of `min(limit, page_max)` items across symbols,
sorted by symbol then time, with an opaque base64 `next_page_token`.

It checks the `APCA-API-KEY-ID` / `APCA-API-SECRET-KEY` headers, records every request (never the secret), and
can be told to misbehave: `fail(429, times=2, retry_after=1)`, `fail(503)`, `corrupt('truncated')` or
`corrupt('missing_field')` for one page, or `stall(seconds)` before answering.

    with AlpacaServer() as srv:
        client = StockHistoricalDataClient('PKTEST', 'sk-test', url_override=srv.url)
"""
from __future__ import annotations

import base64
import json
import re
import threading
import time
import zlib
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

FEEDS = ('iex', 'sip', 'delayed_sip', 'otc', 'boats', 'overnight')
KINDS = ('bars', 'trades', 'quotes')
MAX_LIMIT = 10_000
SIP_VENUES = np.array(['V', 'Q', 'K', 'P', 'Z', 'N', 'D', 'J', 'Y', 'X'])
TRADE_CONDITIONS = [['@'], ['@', 'I'], ['@', 'F', 'I'], [' ', 'T'], ['@', 'F'], ['@', 'T', 'I']]
_TF = re.compile(r'^(\d+)(Min|T|Hour|H|Day|D|Week|W|Month|M)$')


def rfc3339(ts_ns: np.ndarray) -> np.ndarray:
    "RFC-3339 UTC strings with up to 9 fractional digits, trailing zeros trimmed as Alpaca does."
    s = pd.Series(np.datetime_as_string(np.asarray(ts_ns, dtype='datetime64[ns]'), unit='ns'))
    return (s.str.replace(r'\.?0*$', '', regex=True) + 'Z').to_numpy()


class AlpacaServer:
    "Alpaca market-data v2 on 127.0.0.1: deterministic paged data, auth checks, request log and injectable faults."

    def __init__(self, key_id: str = 'PKTEST', secret_key: str = 'sk-test-secret', seed: int = 7,
                 symbols: tuple[str, ...] = ('ABCD', 'QRST', 'WXYZ'), days: tuple[str, ...] = ('2026-03-02', '2026-03-03'),
                 trades_per_day: int = 300, quotes_per_day: int = 300, page_max: int = MAX_LIMIT,
                 sip_allowed: bool = True) -> None:
        self.key_id, self._secret, self.seed = key_id, secret_key, seed
        self.symbols, self.days = tuple(symbols), tuple(days)
        self.trades_per_day, self.quotes_per_day, self.page_max, self.sip_allowed = trades_per_day, quotes_per_day, page_max, sip_allowed
        self.requests: list[dict[str, Any]] = []
        self._faults: deque[tuple[str, float, float | None] | None] = deque()   # None: answer normally
        self._corrupt: list[Any] | None = None                     # [how, successful pages still to serve first, path]
        self._lock = threading.Lock()
        self._cache: dict[tuple, pd.DataFrame] = {}
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -----------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        "Base URL to give alpaca-py's `url_override` (no trailing /v2)."
        assert self._httpd is not None, 'server not started'
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> AlpacaServer:
        handler = type('Handler', (_Handler,), {'app': self})
        self._httpd = _Quiet(('127.0.0.1', 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={'poll_interval': 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown(); self._httpd.server_close(); self._httpd = None

    def __enter__(self) -> AlpacaServer: return self.start()
    def __exit__(self, *exc: Any) -> None: self.stop()

    # -- test controls ---------------------------------------------------------------------------------------
    def fail(self, status: int = 429, times: int = 1, retry_after: float | None = None, after: int = 0) -> None:
        "Answer `after` requests normally, then the next `times` with HTTP `status` (and a Retry-After header if given)."
        with self._lock: self._faults.extend([None] * after + [('status', status, retry_after)] * times)

    def stall(self, seconds: float, times: int = 1, after: int = 0) -> None:
        "Answer `after` requests normally, then wait `seconds` before answering each of the next `times`."
        with self._lock: self._faults.extend([None] * after + [('stall', seconds, None)] * times)

    def corrupt(self, how: str = 'truncated', after: int = 1, path: str | None = None) -> None:
        "Serve `after` good data pages, then one malformed page: 'truncated' JSON, 'missing_field', 'not_a_number' or 'no_data_key'."
        assert how in ('truncated', 'missing_field', 'not_a_number', 'no_data_key')
        with self._lock: self._corrupt = [how, after, path]

    def reset(self) -> None:
        "Forget recorded requests and pending faults."
        with self._lock: self.requests.clear(); self._faults.clear(); self._corrupt = None

    def hits(self, path: str | None = None, status: int | None = None) -> int:
        "Number of requests received (optionally to one path, e.g. '/v2/stocks/bars', or with one status)."
        return sum(1 for r in self.requests if (path is None or r['path'] == path) and (status is None or r['status'] == status))

    # -- the data the server holds --------------------------------------------------------------------------
    def held(self, kind: str, symbols: Any = None, start: Any = None, end: Any = None, feed: str = 'iex',
             timeframe: str = '1Min') -> pd.DataFrame:
        "Everything the server would serve for a query, as a frame (wire field names, `t` as int64 ns, `symbol`)."
        df = self._dataset(kind, feed, timeframe)
        syms = sorted(set(s.strip().upper() for s in (symbols.split(',') if isinstance(symbols, str) else symbols))) if symbols is not None else None
        m = np.ones(len(df), bool)
        if syms is not None: m &= df['symbol'].isin(syms).to_numpy()
        if start is not None: m &= df['t'].to_numpy() >= _ns(start)
        if end is not None: m &= df['t'].to_numpy() <= _ns(end)
        return df[m].reset_index(drop=True)

    def _dataset(self, kind: str, feed: str, timeframe: str = '1Min') -> pd.DataFrame:
        key = (kind, feed, timeframe if kind == 'bars' else None)
        if key not in self._cache:
            if kind == 'bars':
                one = pd.concat([self._minute_bars(s, feed) for s in self.symbols], ignore_index=True)
                self._cache[key] = one if timeframe in ('1Min', '1T') else _resample(one, timeframe)
            else:
                make = self._trades if kind == 'trades' else self._quotes
                self._cache[key] = pd.concat([make(s, feed) for s in self.symbols], ignore_index=True)
        return self._cache[key]

    def _rng(self, kind: str, sym: str, feed: str) -> np.random.Generator:
        return np.random.default_rng([self.seed, KINDS.index(kind), FEEDS.index(feed), zlib.crc32(sym.encode())])

    def _session_minutes(self) -> np.ndarray:
        "UTC ns of every regular-session minute (09:30-15:59 New York) of the server's days."
        out = [pd.date_range(pd.Timestamp(f"{d} 09:30", tz='America/New_York'), periods=390, freq='1min').tz_convert('UTC') for d in self.days]
        return np.concatenate([o.as_unit('ns').asi8 for o in out])

    def _minute_bars(self, sym: str, feed: str) -> pd.DataFrame:
        rng = self._rng('bars', sym, feed)
        t = self._session_minutes()
        t = t[rng.random(len(t)) < (0.6 if feed == 'iex' else 0.9)]       # small caps skip minutes; IEX more often
        n = len(t)
        close = np.round(np.maximum(0.5, 3.0 * np.exp(np.cumsum(rng.normal(0, 0.004, n)))), 4)
        open_ = np.round(np.r_[close[0], close[:-1]] * (1 + rng.normal(0, 0.001, n)), 4)
        high = np.round(np.maximum(open_, close) * (1 + rng.uniform(0, 0.003, n)), 4)
        low = np.round(np.minimum(open_, close) * (1 - rng.uniform(0, 0.003, n)), 4)
        v = rng.integers(100, 50_000, n) // (4 if feed == 'iex' else 1)
        vw = np.round(low + (high - low) * rng.uniform(0.2, 0.8, n), 6)
        return pd.DataFrame(dict(symbol=sym, t=t, o=open_, h=high, l=low, c=close, v=v.astype(np.int64),
                                 n=np.maximum(1, v // 150).astype(np.int64), vw=vw))

    def _ticks_t(self, rng: np.random.Generator, per_day: int) -> np.ndarray:
        days = [pd.Timestamp(f"{d} 09:30", tz='America/New_York').tz_convert('UTC').value for d in self.days]
        return np.sort(np.concatenate([d + rng.integers(0, 390 * 60 * 10**9, per_day) for d in days]))

    def _trades(self, sym: str, feed: str) -> pd.DataFrame:
        rng = self._rng('trades', sym, feed)
        per_day = self.trades_per_day // (3 if feed == 'iex' else 1)
        t = self._ticks_t(rng, per_day); n = len(t)
        p = np.round(np.maximum(0.5, 3.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))), 4)
        x = np.full(n, 'V') if feed == 'iex' else SIP_VENUES[rng.integers(0, len(SIP_VENUES), n)]
        c = [TRADE_CONDITIONS[k] for k in rng.integers(0, len(TRADE_CONDITIONS), n)]
        i = 52_983_525_000_000 + np.cumsum(rng.integers(1, 50, n))
        return pd.DataFrame(dict(symbol=sym, t=t, x=x, p=p, s=rng.integers(1, 5_000, n).astype(np.int64), c=c,
                                 i=i.astype(np.int64), z='C'))

    def _quotes(self, sym: str, feed: str) -> pd.DataFrame:
        rng = self._rng('quotes', sym, feed)
        per_day = self.quotes_per_day // (3 if feed == 'iex' else 1)
        t = self._ticks_t(rng, per_day); n = len(t)
        mid = 3.0 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
        half = rng.integers(1, 6, n) * 0.005
        bp, ap = np.round(mid - half, 4), np.round(mid + half, 4)
        bp[rng.random(n) < 0.03] = 0.0                                     # one-sided quotes (no bid) happen on small caps
        venues = np.array(['V']) if feed == 'iex' else SIP_VENUES
        return pd.DataFrame(dict(symbol=sym, t=t, ax=venues[rng.integers(0, len(venues), n)], ap=ap,
                                 **{'as': rng.integers(1, 40, n).astype(np.int64)},
                                 bx=venues[rng.integers(0, len(venues), n)], bp=bp, bs=rng.integers(0, 40, n).astype(np.int64),
                                 c=[['R']] * n, z='C'))

    # -- answering -------------------------------------------------------------------------------------------
    def _answer(self, path: str, q: dict[str, str], headers: Any) -> tuple[int, dict[str, str], bytes]:
        rec = dict(path=path, params=q, key_id=headers.get('APCA-API-KEY-ID'),
                   auth_ok=headers.get('APCA-API-KEY-ID') == self.key_id and headers.get('APCA-API-SECRET-KEY') == self._secret,
                   feed=q.get('feed'), page_token=q.get('page_token'), limit=q.get('limit'), status=200)
        with self._lock:
            self.requests.append(rec)
            fault = self._faults.popleft() if self._faults else None
        status, hdrs, body = self._route(path, q, rec, fault)
        rec['status'] = status
        return status, hdrs, body

    def _route(self, path: str, q: dict[str, str], rec: dict, fault: tuple[str, float, float | None] | None) -> tuple[int, dict[str, str], bytes]:
        err = lambda st, code, msg, h=None: (st, h or {}, json.dumps({'code': code, 'message': msg}).encode())
        if not rec['auth_ok']: return err(401, 40110000, 'request is not authorized')
        if fault is not None and fault[0] == 'stall':
            rec['stalled'] = True; time.sleep(fault[1]); fault = None
        if fault is not None:
            _, st, ra = fault
            st = int(st)
            h = {'Retry-After': f"{ra:g}"} if ra is not None else {}
            if st == 429: h.update({'X-RateLimit-Limit': '200', 'X-RateLimit-Remaining': '0'})
            return err(st, st * 100_000, {429: 'rate limit exceeded', 500: 'internal server error occurred',
                                          502: 'bad gateway', 503: 'service unavailable', 504: 'gateway timeout'}.get(st, 'error'), h)
        m = re.fullmatch(r'/v2/stocks/(bars|trades|quotes)', path)
        if not m: return 404, {}, b'{"message":"Not Found"}'
        kind = m.group(1)
        if not q.get('symbols'): return err(400, 40010001, 'missing symbols')
        feed = q.get('feed', 'sip')
        if feed not in FEEDS: return err(422, 42210000, f"invalid feed: {feed}")
        if feed == 'sip' and not self.sip_allowed: return err(403, 40310000, 'subscription does not permit querying recent SIP data')
        try: limit = int(q.get('limit', 1000))
        except ValueError: return err(422, 42210000, 'invalid limit')
        if not 1 <= limit <= MAX_LIMIT: return err(422, 42210000, f"invalid limit: exceeds maximum of {MAX_LIMIT}")
        tf = q.get('timeframe', '')
        if kind == 'bars' and not _TF.match(tf): return err(422, 42210000, f"invalid timeframe: {tf!r}")
        try: start, end = (_ns(q[k]) if q.get(k) else None for k in ('start', 'end'))
        except ValueError: return err(422, 42210000, 'invalid start or end')
        data = self.held(kind, q['symbols'], start, end, feed, tf)
        fp = zlib.crc32(f"{kind}|{q['symbols']}|{start}|{end}|{feed}|{tf}".encode())
        offset = 0
        if q.get('page_token'):
            try:
                sym, ts, off, qfp = base64.b64decode(q['page_token']).decode().split('|')
                offset = int(off); assert int(qfp) == fp
            except Exception: return err(400, 40010001, 'invalid page_token')
        n = min(limit, self.page_max)
        page = data.iloc[offset:offset + n]
        nxt = None
        if offset + n < len(data):
            last = page.iloc[-1]
            nxt = base64.b64encode(f"{last['symbol']}|{rfc3339([last['t']])[0]}|{offset + n}|{fp}".encode()).decode()
        body = {kind: _wire(kind, page), 'next_page_token': nxt}
        with self._lock:
            bad = self._corrupt if self._corrupt and (self._corrupt[2] in (None, path)) else None
            if bad is not None and bad[1] > 0: bad[1] -= 1; bad = None
            elif bad is not None: self._corrupt = None
        if bad is None: return 200, {}, json.dumps(body).encode()
        rec['corrupted'] = how = bad[0]
        first = next(iter(body[kind].values()), [{}])
        if how == 'truncated':
            text = json.dumps(body).encode(); return 200, {}, text[:max(1, len(text) // 2)]
        if how == 'missing_field': first[len(first) // 2].pop({'bars': 'c', 'trades': 'p', 'quotes': 'bp'}[kind], None)
        if how == 'not_a_number': first[0][{'bars': 'o', 'trades': 's', 'quotes': 'ap'}[kind]] = 'n/a'
        if how == 'no_data_key': body = {'message': 'ok', 'next_page_token': None}
        return 200, {}, json.dumps(body).encode()


def _ns(x: Any) -> int:
    ts = pd.Timestamp(x)
    return (ts if ts.tzinfo else ts.tz_localize('UTC')).tz_convert('UTC').as_unit('ns').value


def _resample(one: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    "Aggregate minute bars to `timeframe` ('5Min', '1Hour', '1Day' ...), daily bars stamped at New York midnight."
    n, unit = _TF.match(timeframe).groups()
    t = pd.to_datetime(one['t'], utc=True)
    if unit in ('Day', 'D'): key = t.dt.tz_convert('America/New_York').dt.normalize().dt.tz_convert('UTC')
    else: key = t.dt.floor(f"{n}{'min' if unit in ('Min', 'T') else 'h'}")
    g = one.assign(k=key.dt.as_unit('ns').astype('int64')).groupby(['symbol', 'k'], sort=True)
    out = g.agg(o=('o', 'first'), h=('h', 'max'), l=('l', 'min'), c=('c', 'last'), v=('v', 'sum'), n=('n', 'sum'))
    pv = one.assign(pv=one['vw'] * one['v'], k=key.dt.as_unit('ns').astype('int64')).groupby(['symbol', 'k'], sort=True)['pv'].sum()
    out['vw'] = np.round(pv / out['v'], 6)
    return out.reset_index().rename(columns={'k': 't'})[['symbol', 't', 'o', 'h', 'l', 'c', 'v', 'n', 'vw']]


def _wire(kind: str, page: pd.DataFrame) -> dict[str, list[dict[str, Any]]]:
    "A page as Alpaca's multi-symbol JSON: {symbol: [records with wire field names]}."
    if page.empty: return {}
    recs = page.assign(t=rfc3339(page['t'].to_numpy())).to_dict('records')
    out: dict[str, list[dict[str, Any]]] = {}
    for r in recs: out.setdefault(r.pop('symbol'), []).append(r)
    return out


class _Quiet(ThreadingHTTPServer):
    "Does not print the broken pipes of clients that gave up waiting (timeouts are part of the tests)."
    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)): super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    app: AlpacaServer
    protocol_version = 'HTTP/1.1'
    disable_nagle_algorithm = True                   # headers and body go out at once: no 40 ms delayed-ACK stall per page

    def do_GET(self) -> None:
        u = urlsplit(self.path)
        q = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        status, hdrs, body = self.app._answer(u.path, q, self.headers)
        self.send_response(status)
        self.send_header('Content-Type', 'application/json; charset=UTF-8')
        self.send_header('Content-Length', str(len(body)))
        for k, v in hdrs.items(): self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None: pass
