"""Sphinx configuration of the ssad documentation.

Build with ``nox -s docs`` or
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
The build never touches the network: no intersphinx, and the tutorial
notebook (executed by myst-nb at every build) uses synthetic images and the
offline EfficientNet-Lite0 weights of the ``docs`` extra.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the notebook kernel imports the ssad these pages document, not another installed one
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
)

import ssad  # noqa: E402

project = "ssad"
author = "the ssad developers"
copyright = "the ssad developers, BSD-3-Clause"  # noqa: A001
release = ssad.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_nb",
    "sphinxarg.ext",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}

# -- notebooks (myst-nb) --------------------------------------------------------
# Executed at every build; an error in a cell fails the build.
nb_execution_mode = "force"
nb_execution_timeout = 120
nb_execution_raise_on_error = True
nb_execution_show_tb = True
root_doc = "index"
language = "en"

# -- autodoc / autosummary ----------------------------------------------------
autosummary_generate = True
autosummary_generate_overwrite = True
autosummary_imported_members = False
autodoc_default_options = {"member-order": "groupwise"}
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_inherit_docstrings = True

# -- numpydoc -----------------------------------------------------------------
# Class members are listed by the autosummary class template, not by numpydoc
# (listing them twice gives duplicate-object warnings).
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True
numpydoc_validation_checks: set[str] = set()

# Unresolved references to torch / scikit-learn objects (no intersphinx: the
# build is offline) are rendered as plain text, not reported.
nitpicky = False

# -- HTML ---------------------------------------------------------------------
html_theme = "alabaster"
html_title = f"ssad {release}"
html_theme_options = {
    "description": "Self-supervised anomaly detection for images, as scikit-learn estimators",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "240px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "relations.html", "searchbox.html"]}
html_show_sourcelink = False


# -- links to re-exported names ------------------------------------------------
# Docstrings refer to estimators by their subpackage (``ssad.scoring.KNNScorer``);
# the API reference documents them under ``ssad`` (``ssad.KNNScorer``).
_REEXPORTING = ("ssad.scoring.", "ssad.features.", "ssad.detectors.", "ssad.thresholds.")


def _resolve_reexports(app, env, node, contnode):  # noqa: ANN001, ANN202
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    for prefix in _REEXPORTING:
        if target.startswith(prefix) and target[len(prefix) :] in ssad.__all__:
            return env.get_domain("py").resolve_xref(
                env,
                node["refdoc"],
                app.builder,
                node["reftype"],
                "ssad." + target[len(prefix) :],
                node,
                contnode,
            )
    return None


# -- every public name is documented ---------------------------------------------
# The API reference (api.rst) lists names by hand; this check fails the build
# (a warning, and the build runs with -W) when a name in one of these
# modules' ``__all__`` has no entry, so that new public names get documented.
_PUBLIC_MODULES = (
    "ssad",
    "ssad.features",
    "ssad.scoring",
    "ssad.detectors",
    "ssad.backbones",
    "ssad.nn",
    "ssad.augment",
    "ssad.datasets",
    "ssad.utils.estimator_checks",
    "ssad.benchmarks",
    "ssad.metrics",
    "ssad.model_selection",
    "ssad.plotting",
    "ssad.thresholds",
    "ssad.cli",
)


def _check_api_coverage(app, env):  # noqa: ANN001, ANN202
    import importlib

    from sphinx.util import logging as sphinx_logging

    log = sphinx_logging.getLogger(__name__)
    documented = set(env.get_domain("py").objects)
    for modname in _PUBLIC_MODULES:
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", ()):
            if f"{modname}.{name}" in documented or f"ssad.{name}" in documented:
                continue
            log.warning(
                "%s.%s is public (in %s.__all__) but not in the API reference; "
                "add it to docs/api.rst",
                modname,
                name,
                modname,
                location="api",
            )


def _reread_everything(app, env, added, changed, removed):  # noqa: ANN001, ANN202
    # Re-read every page on every build.  Otherwise a page whose docstrings
    # warned in a previous (failed) build is not read again, and a second
    # ``nox -s docs`` would succeed without the warning being fixed.
    return sorted(env.found_docs)


def _skip_metadata_requests(app, what, name, obj, skip, options):  # noqa: ANN001, ANN202
    # scikit-learn generates set_fit_request & co. for extra fit parameters (X_aux);
    # they are its metadata-routing machinery, documented by scikit-learn.
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _rst_text(text: str) -> str:
    """Plain text for a reStructuredText cell (markup characters escaped)."""
    for char in "\\*`|_":
        text = text.replace(char, "\\" + char)
    return " ".join(text.split())  # one line: a list-table cell


def _write_benchmark_tables(app):  # noqa: ANN001, ANN202
    """The runner's presets and estimators as tables, from their registries (never stale).

    Written to ``generated/benchmark_<what>.inc`` (a suffix Sphinx does not read
    as a page), which the benchmarks guide includes.
    """
    from ssad.benchmarks import available_estimators, available_presets

    out = Path(app.srcdir) / "generated"
    out.mkdir(exist_ok=True)
    for what, header, names in (
        ("presets", "What it runs", available_presets()),
        ("estimators", "Estimator", available_estimators()),
    ):
        lines = [".. list-table::", "   :header-rows: 1", "   :widths: 30 70", ""]
        lines += ["   * - Name", f"     - {header}"]
        for name, text in names.items():
            lines += [f"   * - ``{name}``", f"     - {_rst_text(text)}"]
        path, text = out / f"benchmark_{what}.inc", "\n".join(lines) + "\n"
        if not path.exists() or path.read_text() != text:  # else the page is not re-read
            path.write_text(text)


def setup(app):  # noqa: ANN001, ANN201
    app.connect("builder-inited", _write_benchmark_tables)
    app.connect("autodoc-skip-member", _skip_metadata_requests)
    app.connect("missing-reference", _resolve_reexports)
    app.connect("env-check-consistency", _check_api_coverage)
    app.connect("env-get-outdated", _reread_everything)
