"""Test-suite wiring: keep the tests that share an expensive fixture on one xdist worker.

`pytest -n 2` hands tests to workers one by one, and a module-scoped fixture
(a trained run, a compiled network) is built again in every worker that runs
one of its tests. Tests that use such a fixture are grouped by module
(`--dist loadgroup`, set in pyproject.toml), so each fixture is built once;
every other test is still handed out singly.
"""

import pytest


def _uses_shared_fixture(item) -> bool:
  definitions = getattr(item, "_fixtureinfo", None)
  if definitions is None:
    return False
  return any(
    d.scope in ("module", "package", "session")
    for defs in definitions.name2fixturedefs.values()
    for d in defs
  )


def pytest_collection_modifyitems(config, items):
  del config
  for item in items:
    if _uses_shared_fixture(item):
      item.add_marker(pytest.mark.xdist_group(item.module.__name__))
