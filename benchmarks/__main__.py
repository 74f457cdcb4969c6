"""Run smallcap's benchmarks: `python -m benchmarks [name ...] [--rounds N]`.

Prints one JSON line per figure (name, value, reference, ratio, target) and exits 1 if a figure misses
its target. A ratio target is a maximum unless the figure says `"better": "higher"`. Without names it runs every benchmark module in this package.
"""
from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import platform
import sys
from pathlib import Path

HERE = Path(__file__).parent


def available() -> list[str]:
    "Names of the benchmark modules in this package."
    return sorted(m.name for m in pkgutil.iter_modules([str(HERE)]) if not m.name.startswith('_'))


def main(argv: list[str] | None = None) -> int:
    "Run the chosen benchmarks and print their figures as JSON lines."
    ap = argparse.ArgumentParser(prog='python -m benchmarks', description=__doc__.splitlines()[0])
    ap.add_argument('names', nargs='*', help=f"benchmarks to run (default: all of {', '.join(available())})")
    ap.add_argument('--rounds', type=int, default=None, help='repetitions per measurement (default: each benchmark\'s own)')
    args = ap.parse_args(argv)
    if unknown := sorted(set(args.names) - set(available())):
        ap.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    missed = 0
    for name in args.names or available():
        mod = importlib.import_module(f"benchmarks.{name}")
        kw = {} if args.rounds is None else {'rounds': args.rounds}
        for fig in mod.run(**kw):
            fig = {'benchmark': name, **fig, 'python': platform.python_version(), 'machine': platform.machine()}
            if 'target_ratio' in fig:
                fig['met'] = fig['ratio'] >= fig['target_ratio'] if fig.get('better') == 'higher' else fig['ratio'] <= fig['target_ratio']
            if 'target_seconds' in fig: fig['met'] = fig.get('met', True) and fig['seconds'] <= fig['target_seconds']
            missed += fig.get('met') is False
            print(json.dumps(fig), flush=True)
    return 1 if missed else 0


if __name__ == '__main__':
    sys.exit(main())
