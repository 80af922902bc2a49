"""Reference-parity tests that need the heavy reference venv (torchvision + pytorch-fid).

They are not part of the default suite: this directory is skipped at
collection unless JAXGEN_REFERENCE_TESTS=1, e.g.

  JAXGEN_REFERENCE_TESTS=1 /work/venv_fidref/bin/python -m pytest -q tests/reference
"""

import os

if os.environ.get("JAXGEN_REFERENCE_TESTS") != "1":
  collect_ignore_glob = ["test_*.py"]
