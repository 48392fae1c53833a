"""MkDocs hook: executes the tutorials and renders the committed results.

Tutorials. Every ``docs/tutorials/*.py`` is run once per build (``on_pre_build``), two at a time, with the
Python that runs MkDocs (the venv's), in a scratch folder, with ``CDFLOW_DOCS_FIGURES`` naming a folder for
its figures. A page includes a script with a line

    <!-- tutorial: ode_classifier.py -->
    <!-- tutorial: own_data.py requires=cdflow.data.tabular -->

which becomes the script's source, its printed output and its figures (copied into the built site). A script
that exits non-zero, or a marker naming a script that does not exist, fails the build. ``requires=MODULE``
runs the script only if MODULE imports; otherwise the page says that it was not executed.

Results. ``experiments/results/*.md`` and ``benchmarks/results/latest.md`` become the pages ``results/<name>.md``
and ``results/benchmarks.md`` at build time (read from the committed files, never copied into docs/), with
the figures each file names (``figures/<name>.png``) embedded and copied into the site.

API pages. ``<!-- api-if-exists: cdflow.data.tabular -->`` becomes ``::: cdflow.data.tabular`` (a mkdocstrings
directive) when that module's file exists, and nothing otherwise: for modules that are still being written.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

log = logging.getLogger("mkdocs.hooks.run_tutorials")

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "docs" / "tutorials"
RESULTS = ROOT / "experiments" / "results"
BENCHMARKS = ROOT / "benchmarks" / "results" / "latest.md"
MARKER = re.compile(r"^<!--\s*tutorial:\s*(?P<script>[\w.-]+\.py)(?:\s+requires=(?P<requires>[\w.]+))?\s*-->\s*$",
                    re.MULTILINE)
API_IF_EXISTS = re.compile(r"^<!--\s*api-if-exists:\s*(?P<module>[\w.]+)\s*-->\s*$", re.MULTILINE)
FIGURE_REF = re.compile(r"figures/([\w.-]+\.(?:png|svg|jpg))")
TIMEOUT_S = int(os.environ.get("CDFLOW_DOCS_TIMEOUT", "900"))
WORKERS = int(os.environ.get("CDFLOW_DOCS_WORKERS", "2"))


@dataclass
class Run:
    script: str
    stdout: str = ""
    seconds: float = 0.0
    skipped: str | None = None           # why it was not executed (a `requires=` module did not import)
    figures: list[Path] = field(default_factory=list)


_runs: dict[str, Run] = {}
_cache: dict[str, Run] = {}             # by script hash: `mkdocs serve` reruns only changed scripts
_scratch = Path(tempfile.mkdtemp(prefix="cdflow-docs-"))      # the scripts' working folders and figures
atexit.register(shutil.rmtree, _scratch, True)


def markers() -> dict[str, str | None]:
    """Script name → required module (or None), from every tutorial page's markers."""
    found: dict[str, str | None] = {}
    for page in sorted(TUTORIALS.glob("*.md")):
        for m in MARKER.finditer(page.read_text(encoding="utf-8")):
            found[m["script"]] = m["requires"]
    return found


def _env(fig_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(CDFLOW_DOCS_FIGURES=str(fig_dir), MPLBACKEND="Agg", OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"),
               OMP_WAIT_POLICY="PASSIVE", WANDB_MODE=env.get("WANDB_MODE", "offline"), WANDB_SILENT="true",
               PYTHONUNBUFFERED="1", COLUMNS="110", CDFLOW_REPO=str(ROOT))
    return env


def _imports(module: str) -> bool:
    return subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True).returncode == 0


def _run(script: str, requires: str | None) -> Run:
    path = TUTORIALS / script
    key = hashlib.sha256(path.read_bytes() + (requires or "").encode()).hexdigest()
    if key in _cache:
        return _cache[key]
    run = Run(script)
    if requires and not _imports(requires):
        run.skipped = f"`{requires}` does not import in this environment"
        log.info("tutorial %s not executed: %s", script, run.skipped)
        return run
    work = _scratch / path.stem
    shutil.rmtree(work, ignore_errors=True)
    fig_dir = work / "figures"
    fig_dir.mkdir(parents=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=work, env=_env(fig_dir), capture_output=True,
                              text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as err:
        raise PluginError(f"tutorial {script} ran past {TIMEOUT_S} s") from err
    run.seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise PluginError(f"tutorial docs/tutorials/{script} failed (exit {proc.returncode}):\n{tail}")
    run.stdout = proc.stdout.rstrip()
    run.figures = sorted(p for p in fig_dir.iterdir() if p.suffix in (".png", ".svg", ".jpg"))
    log.info("tutorial %s ran in %.1f s", script, run.seconds)
    _cache[key] = run
    return run


# -- hooks ------------------------------------------------------------------------------------------------
def on_config(config):
    """Results files committed after mkdocs.yml was written join the nav's Results section by themselves."""
    section = next((item for item in config.nav or [] if isinstance(item, dict) and "Results" in item), None)
    if section is None:
        return config
    entries = section["Results"]
    listed = {v if isinstance(v, str) else next(iter(v.values())) for v in entries}
    for uri, (src, _) in _results_pages().items():
        if uri not in listed:
            first = src.read_text(encoding="utf-8").splitlines()[:1]
            title = first[0][2:].strip() if first and first[0].startswith("# ") else src.stem
            entries.append({title: uri})
    return config


def on_pre_build(config) -> None:
    wanted = markers()
    scripts = sorted(p.name for p in TUTORIALS.glob("*.py"))
    unused = sorted(set(scripts) - set(wanted))
    if unused:
        raise PluginError(f"tutorial scripts no page includes (add <!-- tutorial: NAME --> to a page): {unused}")
    missing = sorted(set(wanted) - set(scripts))
    if missing:
        raise PluginError(f"tutorial markers name scripts that do not exist in docs/tutorials/: {missing}")
    _runs.clear()
    # longest first, so two workers finish together
    order = sorted(wanted, key=lambda s: -(TUTORIALS / s).stat().st_size)
    with ThreadPoolExecutor(max_workers=max(1, WORKERS)) as pool:
        for run in pool.map(lambda s: _run(s, wanted[s]), order):
            _runs[run.script] = run


def _results_pages() -> dict[str, tuple[Path, str]]:
    """Site path → (committed file, title) of every results page."""
    pages = {}
    for md in sorted(RESULTS.glob("*.md")):
        pages[f"results/{md.name}"] = (md, md.stem)
    if BENCHMARKS.exists():
        pages["results/benchmarks.md"] = (BENCHMARKS, "benchmarks")
    return pages


def _results_page(src: Path) -> str:
    text = src.read_text(encoding="utf-8")
    rel = src.relative_to(ROOT).as_posix()
    note = (f'!!! note "Rendered from `{rel}`"\n    This page is the committed results file, read when the site '
            f"was built; the command that regenerates it is in the file.\n\n")
    lines = text.splitlines()
    # keep the file's own title first, then the note
    if lines and lines[0].startswith("# "):
        body = lines[0] + "\n\n" + note + "\n".join(lines[1:])
    else:
        body = f"# {src.stem}\n\n" + note + text
    figures = [f for f in dict.fromkeys(FIGURE_REF.findall(text)) if (RESULTS / "figures" / f).exists()]
    if figures:
        body += "\n\n## Figures\n\n" + "\n\n".join(f"`figures/{f}`\n\n![{f}](figures/{f})" for f in figures) + "\n"
    return body


def _results_index(pages: dict[str, tuple[Path, str]]) -> str:
    rows = []
    for uri, (src, _) in pages.items():
        first = src.read_text(encoding="utf-8").splitlines()[:1]
        title = first[0][2:].strip() if first and first[0].startswith("# ") else src.stem
        rows.append(f"| [{title}]({Path(uri).name}) | `{src.relative_to(ROOT).as_posix()}` |")
    return ("# Results\n\nThe committed results of the reproduction protocols (`make reproduce-*`) and of the "
            "benchmark suite (`make bench`), rendered from the files in the repository each time the site is "
            "built.\n\n| page | file |\n| --- | --- |\n" + "\n".join(rows) + "\n")


def on_files(files: Files, config) -> Files:
    pages = _results_pages()
    for uri, (src, _) in pages.items():
        files.append(File.generated(config, uri, content=_results_page(src)))
    files.append(File.generated(config, "results/index.md", content=_results_index(pages)))
    fig_dir = RESULTS / "figures"
    if fig_dir.is_dir():
        for fig in sorted(fig_dir.iterdir()):
            if fig.is_file():
                files.append(File.generated(config, f"results/figures/{fig.name}", abs_src_path=str(fig)))
    for run in _runs.values():
        for fig in run.figures:
            files.append(File.generated(config, f"tutorials/figures/{_fig_name(run, fig)}", abs_src_path=str(fig)))
    return files


def _fig_name(run: Run, fig: Path) -> str:
    return f"{Path(run.script).stem}-{fig.name}"


def _render(run: Run, source: str) -> str:
    out = [f'```python title="docs/tutorials/{run.script}"\n{source.rstrip()}\n```\n']
    if run.skipped:
        out.append(f'!!! warning "Not executed in this build"\n    {run.skipped}; the output is missing.\n')
        return "\n".join(out)
    out.append(f"Output of this script, run when this page was built ({run.seconds:.0f} s on the build machine):\n")
    out.append(f"```text\n{run.stdout or '(no output)'}\n```\n")
    for fig in run.figures:
        out.append(f"![{fig.stem}](figures/{_fig_name(run, fig)})\n")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def replace(m: re.Match) -> str:
        script = m["script"]
        if script not in _runs:
            raise PluginError(f"{page.file.src_uri}: tutorial {script} was not run")
        return _render(_runs[script], (TUTORIALS / script).read_text(encoding="utf-8"))

    def api(m: re.Match) -> str:
        # a module that is still being written: documented once its file exists, silently skipped before
        parts = m["module"].split(".")
        base = ROOT / "src" / Path(*parts)
        return f"::: {m['module']}" if base.with_suffix(".py").exists() or (base / "__init__.py").exists() else ""

    return API_IF_EXISTS.sub(api, MARKER.sub(replace, markdown))


SPHINX_ROLE = re.compile(r":(?:mod|func|class|meth|attr|data|obj|exc):(?=<code>)")


def on_page_content(html: str, page, config, files) -> str:
    # docstrings written for Sphinx (":func:`name`") render as ":func:" + code: keep the code only
    return SPHINX_ROLE.sub("", html)
