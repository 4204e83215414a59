"""Every docstring example of the library runs, as a doctest, with its printed output checked.

Each example is self-contained: it may use ``jax``, ``jnp``, ``np`` and ``jaxfact`` and the names of
its own module; everything else it defines itself.
"""

import doctest
import importlib
import pkgutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxfact

MODULES = sorted(m.name for m in pkgutil.walk_packages(jaxfact.__path__, "jaxfact."))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    globs = {"jax": jax, "jnp": jnp, "np": np, "jaxfact": jaxfact, **vars(module)}
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report = []
    for test in finder.find(module, name, globs=globs):
        if test.examples:
            runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, "".join(report)
