"""Fails the docs build (a warning; ``-W`` makes it an error) when a public name is undocumented.

Every name in the ``__all__`` of each module listed in ``coverage_modules`` must be documented by
an autodoc directive under its public path (``jaxfact.nmf``, ``jaxfact.nn.compress``...), except
those listed in ``coverage_skip``.
"""

import importlib

from sphinx.util import logging

logger = logging.getLogger(__name__)


def _check(app, env):
    documented = set(env.get_domain("py").objects)
    missing = []
    for modname in app.config.coverage_modules:
        module = importlib.import_module(modname)
        for name in module.__all__:
            full = f"{modname}.{name}"
            if full not in documented and full not in app.config.coverage_skip:
                missing.append(full)
    if missing:
        logger.warning("public names missing from the API reference: %s", ", ".join(missing))


def setup(app):
    app.add_config_value("coverage_modules", [], "env")
    app.add_config_value("coverage_skip", [], "env")
    app.connect("env-check-consistency", _check)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
