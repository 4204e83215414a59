"""Sphinx configuration of jaxfact's API reference.

Build (warnings are errors, as in CI)::

    python -m sphinx -E -W --keep-going -b html docs docs/_build/html
"""

import importlib
import inspect
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
# Document the checkout this file belongs to, even where another copy of jaxfact is installed.
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "_ext"))

import jaxfact  # noqa: E402

project = "jaxfact"
author = "jaxfact developers"
copyright = "jaxfact developers"
version = release = jaxfact.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "coverage_check",
]

root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []

# The default role: `x` in a docstring is code, as ``x``, never a cross-reference that can fail.
default_role = "code"

# Autodoc: documented objects are named by their public path (jaxfact.NAME, jaxfact.nn.NAME),
# whatever module defines them; members in source order; signatures as written.
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "mixed"
# JAX/Flax types in signatures are not resolvable without intersphinx (no network in CI).
nitpicky = False

# Napoleon: Google-style sections. "Fields:" (NamedTuples of settings) and "Members:" (enums) read
# as argument lists; "Deviations:", "Differentiable:" and "Complexity:", where a docstring makes
# them sections of their own, are rendered as headed paragraphs.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Fields", "params_style"), ("Members", "params_style"),
                            "Deviations", "Differentiable", "Complexity"]



# Docstrings write absolute values and set sizes as |x| in plain text (O(|K| k), |top-k ∩ test|),
# which reStructuredText reads as substitution references. Escape the bars outside literals
# (``...``, `...`), doctest blocks and literal blocks; the library defines no substitutions.
_LITERAL = re.compile(r"(``.*?``|`[^`]*`)")


def _escape_bars(line):
    parts = _LITERAL.split(line)
    return "".join(p if i % 2 else p.replace("|", r"\|") for i, p in enumerate(parts))


def escape_bars(app, what, name, obj, options, lines):
    literal_indent = None  # indentation of the line that opened a literal block ("::")
    in_doctest = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if not stripped:
            in_doctest = False
            continue
        if literal_indent is not None and indent > literal_indent:
            continue
        literal_indent = None
        if stripped.startswith(">>>") or in_doctest:
            in_doctest = True
            continue
        lines[i] = _escape_bars(line)
        if stripped.endswith("::"):
            literal_indent = indent


# NamedTuple fields have no docstrings ("Alias for field number 0"); their meaning, shape and dtype
# are the comment beside each field in the source, as in optax's states. Show that comment
# (or nothing, rather than the alias text).
_ALIAS = re.compile(r"^Alias for field number \d+$")
_RST_SPECIAL = re.compile(r"([\\*`|_\[\]])")


def _owner(name):
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for part in parts[1:-1]:
        obj = getattr(obj, part)
    return obj, parts[-1]


def field_comments(app, what, name, obj, options, lines):
    if not (len([l for l in lines if l.strip()]) == 1 and _ALIAS.match(lines[0].strip())):
        return
    try:
        owner, field = _owner(name)
        source = inspect.getsource(owner).splitlines()
    except (AttributeError, ImportError, OSError, TypeError):
        source = []
    lines[:] = []  # no comment: the field's name and type say it all
    field_line = re.compile(rf"^\s+{re.escape(field)}\s*:[^#]*#\s?(.*)$")
    for i, line in enumerate(source):
        match = field_line.match(line)
        if match:
            text = [match.group(1)]
            for more in source[i + 1:]:
                if not more.strip().startswith("#"):
                    break
                text.append(more.strip().lstrip("#").strip())
            lines[:] = [_RST_SPECIAL.sub(r"\\\1", " ".join(text))]
            return


def setup(app):
    app.connect("autodoc-process-docstring", escape_bars)
    app.connect("autodoc-process-docstring", field_comments, priority=600)


# The API names that the reference must document (checked by _ext/coverage_check.py).
coverage_modules = ["jaxfact", "jaxfact.nn", "jaxfact.nn.linen", "jaxfact.datasets"]
# Listed in __all__ but documented as a page of their own (subpackages), not as an object.
# jaxfact.predict_ratings: the deprecated alias of jaxfact.predict (leaves __all__ in this release).
coverage_skip = ["jaxfact.nn", "jaxfact.datasets", "jaxfact.predict_ratings"]
