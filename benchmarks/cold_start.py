"""Cold start: `import smallcap`, `import smallcap.core` (the domain types, which need pandas) and
`smallcap --help` in fresh processes, against `import pandas`.

Each round runs the reference and the candidates once each, in a rotating order, so that drift in the
machine's load hits all of them alike; the figure is the ratio of medians.
"""
from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path


def _cmds() -> dict[str, list[str]]:
    exe = shutil.which('smallcap') or str(Path(sys.executable).with_name('smallcap'))
    return {
        'import pandas': [sys.executable, '-c', 'import pandas'],
        'import smallcap': [sys.executable, '-c', 'import smallcap'],
        'import smallcap.core': [sys.executable, '-c', 'import smallcap.core'],
        'smallcap --help': [exe, '--help'],
    }


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def run(rounds: int = 15) -> Iterator[dict]:
    "Median wall time of each command over `rounds` fresh processes, as ratios to `import pandas`."
    cmds = _cmds()
    names = list(cmds)
    for c in cmds.values(): _time(c)                       # warm the OS file cache once
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(rounds):
        for n in names[i % len(names):] + names[:i % len(names)]: times[n].append(_time(cmds[n]))
    ref = statistics.median(times['import pandas'])
    for name, target in [('import smallcap', 1.5), ('import smallcap.core', 1.5), ('smallcap --help', 1.5)]:
        med = statistics.median(times[name])
        yield {'figure': name, 'seconds': round(med, 4), 'reference': 'import pandas', 'reference_seconds': round(ref, 4),
               'ratio': round(med / ref, 3), 'target_ratio': target, 'rounds': rounds}
