"""The docs: `_quarto.yml` is valid and names only files that exist (and covers every notebook), and the
nbconvert fallback `smallcap docs` builds a browsable site of every notebook, tutorial and the reports index."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

NOTEBOOKS = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / 'nbs').rglob('*.ipynb') if '.ipynb_checkpoints' not in p.parts)


def _named(cfg: dict) -> list[str]:
    "Every file or glob _quarto.yml names (render list, navbar and sidebar hrefs / contents)."
    out = list(cfg['project'].get('render', []))
    def walk(x, key=None):
        if isinstance(x, dict):
            for k, v in x.items(): walk(v, k)
        elif isinstance(x, list):
            for v in x: walk(v, key)
        elif isinstance(x, str) and key in ('href', 'file', 'contents') and not x.startswith(('http:', 'https:')): out.append(x)
    walk(cfg.get('website', {}))
    return out


def test_quarto_yml_is_valid_and_names_only_existing_files():
    cfg = yaml.safe_load((ROOT / '_quarto.yml').read_text())
    assert cfg['project']['type'] == 'website' and cfg['project']['output-dir'] == '_docs'
    named = _named(cfg)
    assert len(named) > 5
    for n in named:
        hits = list(ROOT.glob(n)) if any(ch in n for ch in '*?[') else [ROOT / n] if (ROOT / n).exists() else []
        assert hits, f"_quarto.yml names {n!r}, which matches no file"
    rendered = {p.relative_to(ROOT).as_posix() for n in cfg['project']['render'] for p in ROOT.glob(n)}
    in_sidebar = {p.relative_to(ROOT).as_posix() for n in named[len(cfg['project']['render']):] for p in (ROOT.glob(n) if any(ch in n for ch in '*?[') else [ROOT / n])}
    for nb in NOTEBOOKS:
        if nb.startswith('nbs/reports/'): continue                    # papermill templates, not pages
        assert nb in rendered, f"{nb} is not rendered by _quarto.yml"
        assert nb in in_sidebar, f"{nb} is not in the _quarto.yml sidebar"


def test_docs_fallback_builds_every_page_with_working_links(tmp_path):
    from smallcap.report import build_docs, example_result, publish
    rep = tmp_path / 'reports'
    publish(example_result(tmp_path / 'results' / 'bt'), out_dir=rep)
    idx = build_docs(tmp_path / '_docs', reports_dir=rep)
    site = idx.parent
    pages = {p.name for p in site.glob('*.html')}
    want = {'index.html', *(f"{Path(n).stem}.html" for n in NOTEBOOKS if re.match(r'nbs/\d', n)),
            *(f"tutorials.{Path(n).stem}.html" for n in NOTEBOOKS if n.startswith('nbs/tutorials/')),
            *(f"reports.{Path(n).stem}.html" for n in NOTEBOOKS if n.startswith('nbs/reports/'))}
    assert pages == want
    assert (site / 'reports' / 'index.html').exists() and (site / 'reports' / 'bt.html').exists()
    for p in site.glob('*.html'):
        text = p.read_text()
        nav = re.search(r"<nav class=.side.>(.*?)</nav>", text, re.S).group(1)
        hrefs = re.findall(r"<a href=['\"]([^'\"#]+)['\"]", nav)
        assert len(hrefs) == len(want) + 1
        for href in hrefs: assert (site / href).exists(), f"{p.name} links to missing {href}"
        assert str(ROOT) not in text and '<script src=' not in text, p.name
    core = (site / '00_core.html').read_text()
    assert 'class="highlight' in core and 'Core (layer 0)' in core and "class='here'" in core
    tut = (site / 'tutorials.research_loop.html').read_text()
    assert 'The research loop' in tut and 'walk_forward' in tut
    from browser import load
    r = load(idx, selectors=('nav.side a',))
    assert r.severe == [] and r.external_requests == [] and r.counts['nav.side a'] == len(want) + 1


def test_docs_command(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('SMALLCAP_')}
    r = subprocess.run([str(Path(sys.executable).with_name('smallcap')), 'docs', '--out', 'site'], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('docs: site/index.html (') and (tmp_path / 'site' / '00_core.html').exists()
