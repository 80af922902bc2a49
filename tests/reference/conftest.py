"""Reference-parity tests that need the heavy reference venv (torchvision + pytorch-fid).

They are not part of the default suite: this directory is skipped at
collection unless JAXGEN_REFERENCE_TESTS=1, e.g.

  python3 -m venv .venv-fidref && .venv-fidref/bin/pip install -e ".[fid-reference,dev]"
  JAXGEN_REFERENCE_TESTS=1 .venv-fidref/bin/pytest -q tests/reference
"""

import os

if os.environ.get("JAXGEN_REFERENCE_TESTS") != "1":
  collect_ignore_glob = ["test_*.py"]
