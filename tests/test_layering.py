"""jaxgen's imports follow the layer order that docs/ARCHITECTURE.md documents.

The order is read from the doc's ```layers block (lowest first; packages on
one line are peers), so the doc and this test cannot drift apart. Every
import counts, module-level or inside a function: a lazy import that runs
upward is still a dependency that runs upward.
"""

import ast
import os
import re

import pytest

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
PACKAGE = os.path.join(ROOT, "jaxgen")
DOC = os.path.join(ROOT, "docs", "ARCHITECTURE.md")
MAX_MODULE_LINES = 600
MAX_CLASS_LINES = 200


def documented_layers() -> list[tuple[str, ...]]:
  """[(peer packages of layer 0), (layer 1), ...] from the doc's ```layers block."""
  with open(DOC) as f:
    block = re.search(r"```layers\n(.*?)```", f.read(), re.S)
  assert block, f"{DOC} has no ```layers block"
  layers = []
  for line in block.group(1).splitlines():
    names = [w for w in line.split() if w.startswith("jaxgen.")]
    if names:
      layers.append(tuple(names))
  return layers


def module_files() -> dict[str, str]:
  """Dotted module name -> file, for every module of the package (the configs link too)."""
  modules = {}
  for folder, _, files in os.walk(PACKAGE, followlinks=True):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        dotted = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
        modules[dotted.removesuffix(".__init__")] = path
  return modules


def imported_modules(path: str, modules: dict[str, str]) -> set[str]:
  """jaxgen modules a file imports anywhere in it (`from pkg import mod` resolves to pkg.mod)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read(), path)):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.split(".")[0] == "jaxgen")
    elif isinstance(node, ast.ImportFrom):
      assert node.level == 0, f"{path}: relative import; write it absolute"
      if node.module and node.module.split(".")[0] == "jaxgen":
        for alias in node.names:
          child = f"{node.module}.{alias.name}"
          found.add(child if child in modules else node.module)
  return found


def layer_of(module: str, layers) -> tuple[int, str] | None:
  """(rank, owning package) of the longest documented package that contains `module`."""
  best = None
  for rank, packages in enumerate(layers):
    for package in packages:
      if module == package or module.startswith(package + "."):
        if best is None or len(package) > len(best[1]):
          best = (rank, package)
  return best


def upward_imports(graph: dict[str, set[str]], layers) -> list[str]:
  """Imports of a package that is not the importer's own and not in a lower layer."""
  violations = []
  for module, deps in sorted(graph.items()):
    if module == "jaxgen":
      continue
    rank, package = layer_of(module, layers)
    for dep in sorted(deps):
      dep_rank, dep_package = layer_of(dep, layers)
      if dep_package != package and dep_rank >= rank:
        violations.append(f"{module} (layer {rank}) imports {dep} (layer {dep_rank})")
  return violations


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
  """Every cycle a depth-first walk of the import graph closes, as 'a -> b -> a'."""
  cycles, state = [], {}

  def visit(module, stack):
    state[module] = "open"
    for dep in sorted(graph.get(module, ())):
      if state.get(dep) == "open":
        cycles.append(" -> ".join(stack[stack.index(dep) :] + [dep]))
      elif dep not in state and dep in graph:
        visit(dep, stack + [dep])
    state[module] = "done"

  for module in sorted(graph):
    if module not in state:
      visit(module, [module])
  return cycles


@pytest.fixture(scope="module")
def graph():
  modules = module_files()
  return {name: imported_modules(path, modules) for name, path in modules.items()}


def test_every_module_has_a_documented_layer(graph):
  layers = documented_layers()
  unplaced = sorted(m for m in graph if m != "jaxgen" and layer_of(m, layers) is None)
  assert not unplaced, f"modules in no layer of {DOC}'s ```layers block: {unplaced}"


def test_no_import_runs_upward_or_sideways(graph):
  """A module imports its own package or lower layers; peers never import each other."""
  violations = upward_imports(graph, documented_layers())
  assert not violations, "imports against the layer order:\n  " + "\n  ".join(violations)


def test_no_import_cycles(graph):
  """No module reaches itself through imports (function-level ones included)."""
  cycles = import_cycles(graph)
  assert not cycles, "import cycles:\n  " + "\n  ".join(cycles)


def test_modules_and_classes_stay_small():
  too_long = []
  for module, path in sorted(module_files().items()):
    source = open(path).read()
    if source.count("\n") > MAX_MODULE_LINES:
      too_long.append(f"{module}: {source.count(chr(10))} lines (max {MAX_MODULE_LINES})")
    for node in ast.walk(ast.parse(source)):
      if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES:
        too_long.append(
          f"{module}.{node.name}: {node.end_lineno - node.lineno + 1} lines (max {MAX_CLASS_LINES})"
        )
  assert not too_long, "split these by concept:\n  " + "\n  ".join(too_long)


def test_the_checks_catch_a_lazy_upward_import_a_peer_import_and_a_cycle(tmp_path):
  """On a scratch graph: a function-level upward import, a peer import and a cycle are found."""
  layers = [("jaxgen.low", "jaxgen.side"), ("jaxgen.high",)]
  modules = {"jaxgen.low.a": "", "jaxgen.low.b": "", "jaxgen.side.s": "", "jaxgen.high.c": ""}
  source = tmp_path / "a.py"
  source.write_text(
    "import numpy\n\ndef f():\n  from jaxgen.high import c\n"
    "  from jaxgen.low import b\n  import jaxgen.side.s\n"
  )
  graph = {
    "jaxgen.low.a": imported_modules(str(source), modules),
    "jaxgen.low.b": {"jaxgen.low.a"},
    "jaxgen.side.s": set(),
    "jaxgen.high.c": set(),
  }
  assert graph["jaxgen.low.a"] == {"jaxgen.high.c", "jaxgen.low.b", "jaxgen.side.s"}
  assert upward_imports(graph, layers) == [
    "jaxgen.low.a (layer 0) imports jaxgen.high.c (layer 1)",
    "jaxgen.low.a (layer 0) imports jaxgen.side.s (layer 0)",
  ]
  assert import_cycles(graph) == ["jaxgen.low.a -> jaxgen.low.b -> jaxgen.low.a"]
