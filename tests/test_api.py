"""The public API: every exported name exists and is documented."""

import jaxfact


def test_every_public_name_is_exported_and_documented():
    for name in jaxfact.__all__:
        obj = getattr(jaxfact, name)
        assert obj.__doc__ and obj.__doc__.strip(), f"jaxfact.{name} has no docstring"
    assert jaxfact.__all__ == sorted(jaxfact.__all__)
