"""`import smallcap` (and the layer-0 modules and the CLI) must not pull in the heavy stack."""
import json

import pytest

from conftest import run_py

HEAVY = ['vectorbt', 'backtrader', 'pandas_ta', 'xgboost', 'sklearn', 'alpaca', 'ib_async', 'papermill', 'dask', 'numba']


ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]
MODULES = sorted('smallcap.' + str(p.relative_to(ROOT / 'smallcap').with_suffix('')).replace('/', '.')
                 for p in (ROOT / 'smallcap').rglob('*.py') if not p.name.startswith('_'))
# kernel modules compile with numba at import by design (vectorbt's `_nb` style); only functions that simulate import them
KERNEL_MODULES = {'smallcap.backtest.nb': ['numba'], 'smallcap.risk_nb': ['numba']}


@pytest.mark.parametrize('stmt', ['import smallcap', *(f'import {m}' for m in MODULES),
                                  'from smallcap.cli import main; main(["--help"], standalone_mode=False)'])
def test_no_heavy_imports(stmt):
    code = f"import sys, json\n{stmt}\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))"
    r = run_py(code)
    assert r.returncode == 0, r.stderr
    allowed = KERNEL_MODULES.get(stmt.removeprefix('import '), [])
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert sorted({m.split('.')[0] for m in got}) == allowed, f"{stmt} imported heavy modules: {got[:8]}"


def test_the_check_can_fail():
    "The same probe does see a heavy module when one is imported."
    r = run_py("import sys, numba; print('numba' in sys.modules)")
    assert r.stdout.strip() == 'True'


def test_import_smallcap_is_tiny():
    "The package itself imports neither pandas nor numpy: layers load when used."
    r = run_py("import sys, smallcap; print(sorted(m for m in ('pandas', 'numpy', 'pydantic', 'click') if m in sys.modules))")
    assert r.stdout.strip() == '[]', r.stdout
