"""Crash recovery of the live engine (issue 15): `smallcap live replay` run as a process against the paper broker server
(another process, on 127.0.0.1, whose book outlives the engine as a real broker's does), killed with SIGKILL at 20
instants and restarted with `--resume` after each:

- at the engine's failpoints (`smallcap.live.journal.FAILPOINTS`): between an order's intent and its send, between the
  broker taking it and its answer being journalled, inside a journal write (inserted, not committed), inside
  reconciliation on a restart (the broker asked, nothing journalled);
- and by kill -9 from outside, once the journal has grown by a random number of records.

At the end: every planned crash happened, no order twice at the broker (by client id and by content), the journal's
positions are the broker's, and the broker's orders, fills, positions and cash equal those of an uninterrupted run.
"""
from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest

from smallcap.data.synth import SynthConfig, build_store
from smallcap.live.journal import Journal
from smallcap.live.paper import Book, PaperBroker

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).parent / 'smallcap')
START, END = '2025-11-24', '2025-11-25'
RISK = ['max_positions=2', 'stop_pct=0.03', 'trail_pct=0.04', 'target_r=2.0', 'max_bars_held=30', 'min_avg_volume=0', 'min_avg_dollar_volume=0', 'max_adv_pct=null']


@pytest.fixture(scope='module')
def store(tmp_path_factory):
    warnings.filterwarnings('ignore')
    p = tmp_path_factory.mktemp('crash') / 'st.duckdb'
    build_store(p, SynthConfig(seed=11, n_symbols=3, start=START, n_sessions=1, n_delisted=0, min_splits=0, gap_prob=0.5))
    return p


def _server(d: Path, syms: list[str]) -> subprocess.Popen:
    "A paper server process on its own book; ready once its port file exists."
    pf = d / 'paper.port'
    proc = subprocess.Popen([sys.executable, '-m', 'smallcap.live.paper', '--book', str(d / 'book.sqlite'), '--symbols', *syms, '--cash', '100000',
                             '--port', '0', '--port-file', str(pf)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):                                              # bounded: 30 s
        if pf.exists(): return proc
        if proc.poll() is not None: raise AssertionError(f"paper server exited {proc.returncode}: {proc.stderr.read()}")
        time.sleep(0.05)
    raise AssertionError('paper server did not start in 30 s')


def _engine(store: Path, d: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    "`smallcap live replay` at the paper server, journalled, resuming its journal if there is one."
    cmd = [CLI, 'live', 'replay', 'sma_cross', '--store', str(store), '--start', START, '--end', END, '--journal', str(d / 'journal.sqlite'),
           '--paper', str(d / 'paper.port'), '--resume', '--no-progress', '--json', '--out', str(d / 'result'), *sum((['--risk', r] for r in RISK), [])]
    return subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _records(path: Path) -> int:
    "Records in a journal so far (read while the engine writes: WAL readers do not block it)."
    if not path.exists(): return 0
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as con: return con.execute('SELECT count(*) FROM events').fetchone()[0]
    except sqlite3.OperationalError: return 0


def _book(d: Path) -> tuple:
    "What the broker holds: every order it took (client id, content), its fills, positions and cash."
    b = Book(d / 'book.sqlite')
    orders = [a['order'] for op, a in b.commands() if op == 'submit']
    pb = PaperBroker(port_file=d / 'paper.port')
    fills = sorted((f.client_id, f.symbol, str(f.side), f.qty, round(f.price, 9), str(f.ts)) for f in pb.fills_since(pd.Timestamp(0, tz='UTC')))
    pos = {s: p.qty for s, p in pb.positions().items() if p.qty}
    return orders, fills, pos, round(pb.account().cash, 6)


def _content(o: dict) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in o.items() if k != 'client_id'))


PLAN = ['intent:1', 'sent:1', 'journal:40', 'reconcile:1', 'kill', 'intent:2', 'sent:2', 'journal:7', 'reconcile:1', 'kill',
        'intent:1', 'sent:1', 'journal:90', 'reconcile:1', 'kill', 'intent:3', 'sent:1', 'journal:3', 'reconcile:1', 'kill']


def test_kill_9_at_20_instants_then_resume_equals_an_uninterrupted_run(store, tmp_path):
    "Twenty SIGKILLs of the running replay, each followed by a restart that reconciles and continues; the end state is the uninterrupted run's."
    from smallcap.data.store import TickStore
    syms = sorted(TickStore(store, read_only=True).bars(None, START, END).symbol.unique())
    rng = random.Random(7)
    clean, crash = tmp_path / 'clean', tmp_path / 'crash'
    clean.mkdir(); crash.mkdir()
    servers = [_server(clean, syms), _server(crash, syms)]
    try:
        p = _engine(store, clean)
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        ref = json.loads(out)
        plan = PLAN[:]                                                # the first start has nothing to reconcile: never a 'reconcile' first
        fired, log = [], []
        for _ in range(60):                                           # bounded: each start runs to a crash or to the end
            what = plan[0] if plan else None
            env = {'SMALLCAP_FAILPOINTS': what} if what and what != 'kill' else {}
            before = _records(crash / 'journal.sqlite')
            p = _engine(store, crash, env)
            if what == 'kill':                                        # from outside, once the journal has grown by a random amount
                grow = rng.randint(5, 80)
                for _ in range(6000):
                    if p.poll() is not None or _records(crash / 'journal.sqlite') >= before + grow: break
                    time.sleep(0.01)
                if p.poll() is None: os.kill(p.pid, signal.SIGKILL)
            out, err = p.communicate(timeout=600)
            log.append((what, p.returncode))
            if p.returncode == -signal.SIGKILL: fired.append(what); plan.pop(0); continue
            assert p.returncode == 0, f"{what}: exit {p.returncode}: {err[-3000:]}"
            if what is None: break
            if what.startswith('reconcile'): plan.pop(0); continue     # nothing to reconcile at that start (no order yet): not a crash instant
            raise AssertionError(f"the replay ended before the planned crash {what!r} ({len(fired)} fired so far): {log}")
        assert len(fired) == 20, (fired, log)
        res = json.loads(out)
        assert res['live']['resumed'] > 0
        assert abs(res['summary']['final_equity'] - ref['summary']['final_equity']) < 1e-6, (res['summary'], ref['summary'])   # the result is the whole session's
        a, b = _book(crash), _book(clean)
        ids = [o['client_id'] for o in a[0]]
        assert len(ids) == len(set(ids)), "an order sent twice under one client id"
        assert len({_content(o) for o in a[0]}) == len(a[0]), "two orders with the same content"
        assert sorted(ids) == sorted(o['client_id'] for o in b[0]), "the orders differ from the uninterrupted run's"
        assert a[1:] == b[1:], "fills, positions or cash differ from the uninterrupted run's"
        assert len(b[1]) >= 6, 'the session trades: there is something to compare'
        j = Journal(crash / 'journal.sqlite', 'replay', res['summary']['strategy'])
        state = j.rebuild_state(syms, 100_000.0)
        assert {s: int(q) for s, q in zip(state.symbols, state.qty) if q} == a[2], "the journal's positions are not the broker's"
        assert j.events('reconcile').shape[0] >= 16
    finally:
        for s in servers:
            s.send_signal(signal.SIGTERM)
            s.wait(10)
