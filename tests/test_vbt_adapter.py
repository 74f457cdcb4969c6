"""The vectorbt adapter (`smallcap.backtest.vbt`) calls vectorbt internals: its compiled `simulate_from_signal_func_nb`,
`vectorbt._settings` and the enum tables. These tests fail loudly, naming what changed, when the installed vectorbt is not
the one the adapter was written against (an upgrade outside the pinned range, a parameter added, removed or moved, a
settings key or an enum member gone), and show that the check can fail."""
from __future__ import annotations

import importlib.metadata as md

import pytest


def test_installed_vectorbt_matches_the_adapter():
    from smallcap.backtest.vbt import vbt_mismatches
    bad = vbt_mismatches()
    assert not bad, "vectorbt is not what smallcap.backtest.vbt was written against:\n  " + "\n  ".join(bad)


def test_the_pinned_range_is_the_adapters():
    "pyproject's vectorbt pin and the adapter's range say the same."
    import tomllib
    from pathlib import Path
    from smallcap.backtest.vbt import VBT_VERSIONS
    deps = tomllib.loads((Path(__file__).resolve().parents[1] / 'pyproject.toml').read_text())['project']['dependencies']
    pin = next(d for d in deps if d.replace(' ', '').startswith('vectorbt'))
    assert pin.replace(' ', '') == f"vectorbt>={VBT_VERSIONS[0]},<{VBT_VERSIONS[1]}", pin
    assert md.version('vectorbt').split('.')[:2] >= VBT_VERSIONS[0].split('.')


@pytest.mark.parametrize('change, expect', [
    (lambda m: setattr(m, 'VBT_SIGNATURE', m.VBT_SIGNATURE[:-1]), "new ['flex_2d']"),
    (lambda m: setattr(m, 'VBT_SIGNATURE', m.VBT_SIGNATURE + ('new_arg',)), "missing ['new_arg']"),
    (lambda m: setattr(m, 'VBT_SIGNATURE', m.VBT_SIGNATURE[1::-1] + m.VBT_SIGNATURE[2:]), 'another order'),
    (lambda m: setattr(m, 'VBT_SETTINGS', m.VBT_SETTINGS + ('gone_key',)), "lacks ['gone_key']"),
    (lambda m: setattr(m, 'VBT_ENUMS', {**m.VBT_ENUMS, 'size_type': ('SizeType', ('Shares',))}), "SizeType lacks ['Shares']"),
    (lambda m: setattr(m, 'VBT_ENUMS', {**m.VBT_ENUMS, 'x': ('NoSuchEnum', ())}), 'NoSuchEnum (for x) is gone'),
    (lambda m: setattr(m, 'VBT_CONTEXT', m.VBT_CONTEXT + ('cash_now',)), "SignalContext lacks ['cash_now']"),
    (lambda m: setattr(m, 'VBT_SL_CONTEXT', m.VBT_SL_CONTEXT + ('last_position',)), "AdjustSLContext lacks ['last_position']"),
    (lambda m: setattr(m, 'VBT_ENUMS', {**m.VBT_ENUMS, 'upon_stop_exit': ('StopExitMode', ('Closes',))}), "StopExitMode lacks ['Closes']"),
    (lambda m: setattr(m, 'VBT_VERSIONS', ('0.1', '1.0')), "outside the adapter's range"),
])
def test_the_check_can_fail(change, expect, monkeypatch):
    "Each kind of difference is found and named (the adapter's expectations changed instead of vectorbt)."
    import smallcap.backtest.vbt as m
    with monkeypatch.context() as mp:
        for k in ('VBT_SIGNATURE', 'VBT_SETTINGS', 'VBT_ENUMS', 'VBT_CONTEXT', 'VBT_SL_CONTEXT', 'VBT_VERSIONS'): mp.setattr(m, k, getattr(m, k))
        change(m)
        bad = m.vbt_mismatches()
    assert any(expect in b for b in bad), bad
