"""A real headless Chromium for the report tests, driven over the DevTools protocol (no selenium needed).

`chromium()` finds /usr/bin/chromium or installs the Debian packages `chromium` and `chromium-driver` (as root, or
through passwordless sudo); when neither is possible the calling test is skipped with the reason, never silently.
`load(path)` opens a local HTML file with the network off and returns what the page did: JavaScript exceptions,
console errors, log entries of level error (failed resource loads), any request that left the machine, counts
of elements, and a PNG screenshot.
"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
         '--disable-component-update', '--disable-sync', '--disable-extensions', '--disable-default-apps', '--mute-audio',
         '--hide-scrollbars', '--no-default-browser-check', '--proxy-server=127.0.0.1:9', '--proxy-bypass-list=<-loopback>']
APT_PACKAGES = ['chromium', 'chromium-driver']


def _find() -> str | None:
    for c in ('/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser'), shutil.which('google-chrome')):
        if c and Path(c).exists(): return c
    return None


def _install() -> str:
    "Install Chromium with apt-get (root or passwordless sudo); returns what happened."
    if os.geteuid() == 0: pre = []
    elif shutil.which('sudo') and subprocess.run(['sudo', '-n', 'true'], capture_output=True).returncode == 0: pre = ['sudo', '-n']
    else: return 'not root and no passwordless sudo'
    if not shutil.which('apt-get'): return 'no apt-get on this machine'
    env = {**os.environ, 'DEBIAN_FRONTEND': 'noninteractive'}
    cmd = pre + ['apt-get', 'install', '-y', '--no-install-recommends', *APT_PACKAGES]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if r.returncode != 0:   # package lists may be missing on a fresh machine
            subprocess.run(pre + ['apt-get', 'update'], capture_output=True, text=True, env=env, timeout=600)
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e: return f"apt-get failed: {e}"
    return 'installed' if r.returncode == 0 else f"apt-get failed: {(r.stderr or r.stdout).strip()[-300:]}"


def chromium() -> str:
    "Path of a Chromium binary, installing it on first use; skips the test (saying why) only if that is impossible."
    if (c := _find()): return c
    print(f"[browser tests] Chromium not found: installing {' '.join(APT_PACKAGES)} with apt-get (first run only)")
    what = _install()
    if (c := _find()): return c
    pytest.skip(f"headless Chromium unavailable and could not be installed ({what}); install the Debian packages {APT_PACKAGES}")


@dataclass
class PageResult:
    "What a page did when loaded."
    url: str
    exceptions: list[str] = field(default_factory=list)  # uncaught JavaScript exceptions
    console_errors: list[str] = field(default_factory=list)  # console.error calls
    log_errors: list[str] = field(default_factory=list)  # browser log entries of level error (e.g. failed loads)
    external_requests: list[str] = field(default_factory=list)  # requests to anything but file:, data:, blob:, about:
    counts: dict = field(default_factory=dict)  # CSS selector -> number of matching elements
    values: dict = field(default_factory=dict)  # extra JS expressions evaluated after load
    screenshot: Path | None = None  # PNG file
    screenshot_size: tuple[int, int] | None = None  # (width, height) in pixels

    @property
    def severe(self) -> list[str]:
        "Everything Chromium would log as SEVERE: exceptions, console errors, error log entries."
        return self.exceptions + self.console_errors + self.log_errors


class _CDP:
    "A minimal DevTools protocol client over one websocket (flattened sessions)."
    def __init__(self, url: str):
        from websockets.sync.client import connect
        self._cm = connect(url, max_size=None, open_timeout=30)
        self.ws = self._cm.__enter__()
        self.n, self.events = 0, []

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60) -> dict:
        self.n += 1
        msg = {'id': self.n, 'method': method, 'params': params or {}}
        if session: msg['sessionId'] = session
        self.ws.send(json.dumps(msg))
        end = time.monotonic() + timeout
        while True:
            m = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            if m.get('id') == self.n:
                if 'error' in m: raise RuntimeError(f"{method}: {m['error']}")
                return m.get('result', {})
            self.events.append(m)

    def wait(self, method: str, timeout: float = 60) -> dict:
        for i, e in enumerate(self.events):
            if e.get('method') == method: return self.events[i]
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = json.loads(self.ws.recv(timeout=max(0.1, end - time.monotonic())))
            self.events.append(m)
            if m.get('method') == method: return m
        raise TimeoutError(method)

    def drain(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try: self.events.append(json.loads(self.ws.recv(timeout=max(0.05, end - time.monotonic()))))
            except TimeoutError: break

    def close(self) -> None:
        self._cm.__exit__(None, None, None)


def _text(args: list[dict]) -> str:
    return ' '.join(str(a.get('value', a.get('description', a.get('type')))) for a in args)


def load(path: str | Path, selectors: tuple[str, ...] = (), values: dict | None = None, screenshot: str | Path | None = None,
         clip_to: str | None = None, width: int = 1280, height: int = 1600, settle: float = 1.5, timeout: float = 120) -> PageResult:
    "Open a local HTML file in headless Chromium and report errors, element counts, JS values and a screenshot."
    exe = chromium()
    url = Path(path).resolve().as_uri()
    prof = Path(tempfile.mkdtemp(prefix='smallcap-chromium-'))
    proc = subprocess.Popen([exe, *FLAGS, f'--user-data-dir={prof}', '--remote-debugging-port=0', f'--window-size={width},{height}', 'about:blank'],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cdp = None
    try:
        port_file, end = prof / 'DevToolsActivePort', time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None: raise RuntimeError(f"chromium exited with status {proc.returncode}")
            if time.monotonic() > end: raise TimeoutError('chromium did not open its DevTools port')
            time.sleep(0.1)
        port, ws_path = port_file.read_text().splitlines()[:2]
        cdp = _CDP(f"ws://127.0.0.1:{port}{ws_path}")
        tid = cdp.call('Target.createTarget', {'url': 'about:blank'})['targetId']
        sid = cdp.call('Target.attachToTarget', {'targetId': tid, 'flatten': True})['sessionId']
        for m in ('Runtime.enable', 'Log.enable', 'Page.enable', 'Network.enable'): cdp.call(m, session=sid)
        cdp.call('Emulation.setDeviceMetricsOverride', {'width': width, 'height': height, 'deviceScaleFactor': 1, 'mobile': False}, session=sid)
        cdp.events.clear()
        cdp.call('Page.navigate', {'url': url}, session=sid)
        cdp.wait('Page.loadEventFired', timeout)
        cdp.drain(settle)
        res = PageResult(url)
        ev = lambda expr: cdp.call('Runtime.evaluate', {'expression': expr, 'returnByValue': True}, session=sid)['result'].get('value')
        res.counts = {s: ev(f"document.querySelectorAll({json.dumps(s)}).length") for s in selectors}
        res.values = {k: ev(v) for k, v in (values or {}).items()}
        if screenshot is not None:
            h = height
            if clip_to: h = int(ev(f"(() => {{ const e = document.querySelector({json.dumps(clip_to)}); return e ? e.getBoundingClientRect().bottom + window.scrollY + 16 : {height}; }})()"))
            shot = cdp.call('Page.captureScreenshot', {'format': 'png', 'captureBeyondViewport': True,
                                                       'clip': {'x': 0, 'y': 0, 'width': width, 'height': h, 'scale': 1}}, session=sid)
            png = base64.b64decode(shot['data'])
            Path(screenshot).write_bytes(png)
            res.screenshot = Path(screenshot)
            res.screenshot_size = (int.from_bytes(png[16:20], 'big'), int.from_bytes(png[20:24], 'big'))
        cdp.drain(0.2)
        for e in cdp.events:
            m, p = e.get('method'), e.get('params', {})
            if m == 'Runtime.exceptionThrown':
                d = p.get('exceptionDetails', {})
                res.exceptions.append(f"{d.get('text')} {d.get('exception', {}).get('description', '')} at {d.get('url')}:{d.get('lineNumber')}")
            elif m == 'Runtime.consoleAPICalled' and p.get('type') in ('error', 'assert'): res.console_errors.append(_text(p.get('args', [])))
            elif m == 'Log.entryAdded' and p.get('entry', {}).get('level') == 'error':
                res.log_errors.append(f"{p['entry'].get('source')}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
            elif m == 'Network.requestWillBeSent':
                u = p.get('request', {}).get('url', '')
                if not u.startswith(('file:', 'data:', 'blob:', 'about:')): res.external_requests.append(u)
        return res
    finally:
        if cdp is not None:
            try: cdp.call('Browser.close', timeout=5)
            except Exception: pass
            cdp.close()
        try: proc.wait(timeout=10)
        except subprocess.TimeoutExpired: proc.kill(); proc.wait()
        shutil.rmtree(prof, ignore_errors=True)


if __name__ == '__main__':   # `python tests/browser.py install`: the set-up step of `./run test`
    import sys
    if sys.argv[1:] != ['install']: sys.exit('usage: python tests/browser.py install')
    if (c := _find()): print(f"[browser tests] headless Chromium: {c}"); sys.exit(0)
    print(f"[browser tests] installing {' '.join(APT_PACKAGES)} with apt-get (first run only) ...", flush=True)
    what = _install()
    print(f"[browser tests] headless Chromium: {_find()}" if _find() else
          f"[browser tests] Chromium could NOT be installed ({what}): the browser checks will be skipped, saying so")
