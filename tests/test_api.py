"""The public API: every exported name exists and is documented, and the README's API table
names every public name and nothing else."""

import pathlib
import re

import jaxfact
import jaxfact.datasets
import jaxfact.nn
import jaxfact.nn.linen

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

# The namespaces whose __all__ is public, by the prefix the README's table writes them with.
NAMESPACES = {"": jaxfact, "nn.": jaxfact.nn, "nn.linen.": jaxfact.nn.linen,
              "datasets.": jaxfact.datasets}
# Subpackages in jaxfact.__all__: the table lists their names, not the subpackages themselves.
SUBPACKAGES = {"nn", "datasets"}
# Deprecated aliases kept for one release: public, but not advertised in the table.
DEPRECATED = {"predict_ratings"}


def public_names():
    names = set()
    for prefix, module in NAMESPACES.items():
        names |= {prefix + name for name in module.__all__}
    return names - SUBPACKAGES - DEPRECATED


def table_names():
    """The leading dotted name of every code span in the first column of the README's table."""
    text = README.read_text(encoding="utf8")
    section = text[text.index("## Public API"):]
    section = section[:section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]  # header, rule
    assert rows, "the README has no API table"
    names = []
    for row in rows:
        first = re.split(r"(?<!\\)\|", row)[1]
        spans = re.findall(r"`([^`]+)`", first)
        assert spans, f"an API table row names nothing: {row}"
        names += [re.match(r"[A-Za-z_][\w.]*", span).group() for span in spans]
    return names


def resolve(name):
    """The public name that `name` (maybe followed by an attribute, e.g. a method) starts with."""
    public = public_names()
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        head = ".".join(parts[:i])
        if head in public:
            obj = eval("jaxfact." + head, {"jaxfact": jaxfact})  # noqa: S307 (our own names)
            for attr in parts[i:]:
                assert hasattr(obj, attr), f"README names jaxfact.{name}, which does not exist"
                obj = getattr(obj, attr)
            return head
    raise AssertionError(f"the README's API table names `{name}`, which is not public "
                         f"(not in the __all__ of jaxfact, jaxfact.nn, jaxfact.nn.linen or "
                         f"jaxfact.datasets)")


def test_every_public_name_is_exported_and_documented():
    for prefix, module in NAMESPACES.items():
        for name in module.__all__:
            obj = getattr(module, name)
            assert obj.__doc__ and obj.__doc__.strip(), f"jaxfact.{prefix}{name} has no docstring"
    assert jaxfact.__all__ == sorted(jaxfact.__all__)
    assert jaxfact.nn.__all__ == sorted(jaxfact.nn.__all__)


def test_readme_api_table_names_every_public_name_and_nothing_else():
    named = {resolve(name) for name in table_names()}
    missing = sorted(public_names() - named)
    assert not missing, f"the README's API table does not name: {', '.join(missing)}"


def test_datasets_is_reachable_from_the_package():
    assert jaxfact.datasets.load_digits().images.shape == (1797, 64)
