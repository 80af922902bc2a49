"""Every command in README.md is executed by a test; the first two are what CI runs.

`readme_commands()` reads the README's ```bash blocks (continuation lines
joined, comments dropped). `COMMAND_TESTS` says which test runs each one;
those tests take the command from the README itself, so an edited command is
the one that gets run. A command with no entry fails
`test_every_readme_command_has_a_test`.
"""

import ast
import contextlib
import io
import os
import re
import shlex

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
README = os.path.join(ROOT, "README.md")

# (how a README command starts, the test that runs it). The first match wins.
COMMAND_TESTS = [
  (
    "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/jaxgen quickstart",
    "tests/test_training.py::test_quickstart_trains_judges_and_writes_its_report",
  ),
  (
    "python3 -m venv .venv && .venv/bin/pip install -e .[torch,dev] && .venv/bin/pytest",
    "tests/test_readme.py::test_ci_runs_exactly_the_readme_test_command",
  ),
  (
    "jaxgen train --config configs/t2m_mdm_humanml3d.py --dry-run",
    "tests/test_cli.py::test_readme_commands_that_need_a_pod_or_real_data_dry_run",
  ),
  (
    "jaxgen train --distributed",
    "tests/test_cli.py::test_readme_commands_that_need_a_pod_or_real_data_dry_run",
  ),
  (
    "jaxgen train --coordinator",
    "tests/test_cli.py::test_readme_commands_that_need_a_pod_or_real_data_dry_run",
  ),
  (
    "jaxgen train --config configs/sd15_finetune.py",
    "tests/test_sd_finetune.py::test_readme_commands",
  ),
  (
    "jaxgen train --config configs/sd2_finetune.py",
    "tests/test_sd_finetune.py::test_readme_commands",
  ),
  ("jaxgen convert --from jaxgen runs/", "tests/test_sd_finetune.py::test_readme_commands"),
  (
    "jaxgen train --config",
    "tests/test_cli.py::test_train_runs_every_experiment_and_refuses_architecture_files",
  ),
  ("jaxgen sample", "tests/test_cli.py::test_readme_sample_and_eval_motion_commands"),
  (
    "python benchmarks/image_to_image_table.py",
    "tests/test_image_to_image.py::test_readme_table_command",
  ),
  ("jaxgen eval-motion", "tests/test_cli.py::test_readme_sample_and_eval_motion_commands"),
  ("jaxgen eval --metric fid", "tests/test_metrics_eval_cli.py::test_readme_eval_commands"),
  ("jaxgen eval --metric ssim", "tests/test_metrics_eval_cli.py::test_readme_eval_commands"),
  (
    "jaxgen eval --metric fvd",
    "tests/test_metrics_fvd.py::test_cli_identical_videos_in_two_formats_give_zero",
  ),
  (
    "jaxgen eval --metric clip-score",
    "tests/test_metrics_clip_score.py::test_eval_cli_clip_score_with_captions_file",
  ),
  (
    "jaxgen eval --metric lse",
    "tests/test_eval_talking.py::test_lse_cli_reads_mp4_speech_and_npy_with_wav",
  ),
  ("jaxgen eval --metric mouth", "tests/test_eval_talking.py::test_mouth_metrics_through_the_cli"),
  ("jaxgen convert", "tests/test_sd_pipeline.py::test_convert_cli_round_trip_is_bit_identical"),
  ("tpu_scripts/", "tests/test_tpu_scripts.py::test_readme_commands_dry_run"),
]


def _blocks(language: str) -> list[str]:
  with open(README) as f:
    return re.findall(rf"```{language}\n(.*?)```", f.read(), re.S)


def _readme_words() -> list[list[str]]:
  words = []
  for block in _blocks("bash"):
    for line in block.replace("\\\n", " ").splitlines():
      if shlex.split(line, comments=True):
        words.append(shlex.split(line, comments=True))
  return words


def readme_commands() -> list[str]:
  """The README's shell commands in order, one string each (words joined by spaces)."""
  return [" ".join(words) for words in _readme_words()]


def readme_argv(prefix: str) -> list[list[str]]:
  """argv of every README command that starts with `prefix` (e.g. "jaxgen sample")."""
  return [words for words in _readme_words() if " ".join(words).startswith(prefix)]


def _test_for(command: str) -> str | None:
  return next((test for start, test in COMMAND_TESTS if command.startswith(start)), None)


def test_readme_opens_with_quickstart_and_test_commands():
  quickstart, tests = readme_commands()[:2]
  assert quickstart.endswith("jaxgen quickstart")
  assert "pytest" in tests and ".[torch,dev]" in tests


def test_ci_runs_exactly_the_readme_test_command():
  block = _blocks("bash")[0]
  with open(os.path.join(ROOT, ".ci", "run")) as f:
    ci_lines = [line.strip() for line in f]
  assert block.splitlines()[1] in ci_lines


def test_every_readme_command_has_a_test():
  missing = [c for c in readme_commands() if _test_for(c) is None]
  assert not missing, f"README commands no test runs (add them to COMMAND_TESTS): {missing}"
  for command in readme_commands():
    path, name = _test_for(command).split("::")
    with open(os.path.join(ROOT, path)) as f:
      tests = {node.name for node in ast.parse(f.read()).body if isinstance(node, ast.FunctionDef)}
    assert name in tests, f"{command!r} maps to {path}::{name}, which does not exist"


def test_readme_links_the_design_doc_inside_the_repository():
  with open(README) as f:
    text = f.read()
  assert "](docs/ARCHITECTURE.md)" in text and os.path.isfile(
    os.path.join(ROOT, "docs", "ARCHITECTURE.md")
  )
  assert "../" not in re.sub(r"```.*?```", "", text, flags=re.S)


def test_readme_architecture_snippet_prints_the_sd15_parameter_count():
  [snippet] = [b for b in _blocks("python") if "sd15_unet" in b]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    exec(compile(snippet, "README.md", "exec"), {})  # pylint: disable=exec-used
  assert out.getvalue().strip() == snippet.rsplit("#", 1)[1].strip() == "859520964"
