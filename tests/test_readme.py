"""The README's first two commands are what CI runs."""

import os
import re

ROOT = os.path.join(os.path.dirname(__file__), "..")


def _readme_commands():
  with open(os.path.join(ROOT, "README.md")) as f:
    block = re.search(r"```bash\n(.*?)```", f.read(), re.S).group(1)
  return [line for line in block.splitlines() if line.strip()]


def test_readme_opens_with_quickstart_and_test_commands():
  quickstart, tests = _readme_commands()[:2]
  assert quickstart.endswith("jaxgen quickstart")
  assert "pytest" in tests and '".[torch,dev]"' in tests


def test_ci_runs_exactly_the_readme_test_command():
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci_lines = [line.strip() for line in f]
  assert _readme_commands()[1] in ci_lines
