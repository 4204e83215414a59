"""Tests of sharded inputs on 8 host devices.

This directory runs in its own process (``tests/test_sharded.py`` starts one per file, with
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` and ``JAXFACT_SHARDED_SESSION=1``); the
default session ignores it, so its other tests keep two devices.
"""

import jax
import pytest

if jax.device_count() < 8:  # pragma: no cover - only when run by hand without the flag
    pytest.exit("tests/sharded needs 8 devices: run it through tests/test_sharded.py, or set "
                "XLA_FLAGS=--xla_force_host_platform_device_count=8 JAXFACT_SHARDED_SESSION=1",
                returncode=1)
