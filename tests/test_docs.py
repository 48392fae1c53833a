"""The documentation site (mkdocs.yml, docs/): its sources are consistent (fast), and it builds in strict mode with
every tutorial executed, working links and a search index (slow: `make docs` runs the same build in CI)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
TUTORIALS = DOCS / "tutorials"
MARKER = re.compile(r"^<!--\s*tutorial:\s*([\w.-]+\.py)(?:\s+requires=[\w.]+)?\s*-->\s*$", re.MULTILINE)

yaml = pytest.importorskip("yaml")


def _config() -> dict:
    # mkdocs.yml may carry !!python/name tags in other projects; this one is plain YAML
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def _nav_files(nav) -> list[str]:
    out: list[str] = []
    for item in nav:
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            for value in item.values():
                out.extend(_nav_files(value) if isinstance(value, list) else [value])
    return out


def test_nav_files_exist():
    """Every nav entry is a page in docs/, or a results page the hook renders from a committed file."""
    config = _config()
    assert config["strict"] is True and config["theme"]["font"] is False
    missing = []
    for uri in _nav_files(config["nav"]):
        if uri.startswith("results/"):
            name = Path(uri).name
            src = {"index.md": None, "benchmarks.md": ROOT / "benchmarks/results/latest.md"}.get(
                name, ROOT / "experiments/results" / name)
            if src is not None and not src.exists():
                missing.append(f"{uri} (from {src.relative_to(ROOT)})")
        elif not (DOCS / uri).exists():
            missing.append(uri)
    assert not missing, f"nav entries without a file: {missing}"
    assert "distributed.md" in _nav_files(config["nav"])


def test_every_tutorial_script_is_on_a_page():
    scripts = {p.name for p in TUTORIALS.glob("*.py")}
    referenced = set()
    for page in TUTORIALS.glob("*.md"):
        referenced |= set(MARKER.findall(page.read_text(encoding="utf-8")))
    assert scripts, "no tutorial scripts in docs/tutorials"
    assert scripts == referenced, f"unreferenced: {scripts - referenced}; missing: {referenced - scripts}"
    nav = _nav_files(_config()["nav"])
    pages = {f"tutorials/{p.name}" for p in TUTORIALS.glob("*.md")}
    assert pages <= set(nav), f"tutorial pages not in the nav: {pages - set(nav)}"


def test_api_pages_name_existing_modules():
    """Each `::: module` directive names a module file under src/ (a renamed module fails here, not at build)."""
    bad = []
    for page in (DOCS / "api").glob("*.md"):
        for module in re.findall(r"^:::\s*([\w.]+)", page.read_text(encoding="utf-8"), re.MULTILINE):
            base = ROOT / "src" / Path(*module.split("."))
            if not (base.with_suffix(".py").exists() or (base / "__init__.py").exists()):
                bad.append(f"{page.name}: {module}")
    assert not bad, bad


# -- the built site ------------------------------------------------------------------------------------------
class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if value and ((tag == "a" and name == "href") or (tag in ("img", "script") and name == "src")
                          or (tag == "link" and name == "href")):
                self.links.append(value)


def check_site(site: Path) -> None:
    """The checks a browser user would notice: pages exist, local links and images resolve, search has an index."""
    index = site / "index.html"
    assert index.exists()
    page = site / "tutorials" / "ode_classifier.html"
    html = page.read_text(encoding="utf-8")
    assert "train accuracy" in html and "cdflow run summary" in html, "the tutorial's output is not on its page"
    assert 'src="figures/ode_classifier-decision_boundary.png"' in html
    assert (site / "tutorials/figures/ode_classifier-decision_boundary.png").exists()
    assert "fonts.googleapis.com" not in index.read_text(encoding="utf-8")
    broken = []
    for html_file in site.rglob("*.html"):
        if html_file.name == "404.html":  # served by a web server only: its links are absolute by design
            continue
        parser = _Links()
        parser.feed(html_file.read_text(encoding="utf-8"))
        for link in parser.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("#", "mailto:", "data:")):
                continue
            target = (html_file.parent / unquote(parts.path)).resolve()
            if target.is_dir():
                target = target / "index.html"
            if not target.exists():
                broken.append(f"{html_file.relative_to(site)} → {link}")
    assert not broken, f"{len(broken)} broken local links, e.g. {broken[:10]}"
    assert (site / "search" / "search_index.js").exists(), "Material's offline plugin: search from file://"
    search = json.loads((site / "search" / "search_index.json").read_text(encoding="utf-8"))
    text = " ".join(doc["text"] for doc in search["docs"])
    assert "Feynman" in text and "ContinuousDepth" in text
    for results in ("results/graph.html", "results/benchmarks.html", "results/toys.html"):
        assert (site / results).exists()
    assert (site / "results/figures").is_dir()


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mkdocs", path=str(Path(sys.executable).parent)) is None,
                    reason="mkdocs is not installed (pip install -e '.[dev]')")
def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    mkdocs = str(Path(sys.executable).parent / "mkdocs")
    proc = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    check_site(tmp_path / "site")
