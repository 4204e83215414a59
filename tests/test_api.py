"""The public API: every exported name exists and is documented."""

import jaxfact


def test_every_public_name_is_exported_and_documented():
    for name in jaxfact.__all__:
        obj = getattr(jaxfact, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"jaxfact.{name} has no docstring"
    assert jaxfact.__all__ == sorted(jaxfact.__all__)


def test_datasets_is_reachable_from_the_package():
    assert jaxfact.datasets.load_digits().images.shape == (1797, 64)
