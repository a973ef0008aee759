"""The package's shape is the pipeline's: each stage depends on exactly the koraft code it runs.

DVC reruns a stage when one of its deps changes, so a stage that loads a koraft file its deps do
not list runs stale code silently, and one that lists more reruns for nothing.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import ROOT

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
STEPS = ("core", "inference", "data", "models", "training", "serving", "evaluation", "generation", "preference",
         "benchmark", "publish")
# What each step may import; nothing imports upward, and no stage imports publish.
ALLOWED = {"core": {"core"}, "inference": {"core", "inference"}, "data": {"core", "data"},
           "models": {"core", "data", "models"}, "training": {"core", "models", "training"},
           "serving": {"core", "models", "serving"},
           "evaluation": {"core", "inference", "data", "models", "serving", "evaluation"},
           "generation": {"core", "inference", "data", "models", "generation"},
           "preference": {"core", "inference", "data", "models", "training", "evaluation", "preference"},
           "benchmark": {"core", "models", "evaluation", "benchmark"},
           "publish": {"core", "models", "training", "serving", "evaluation", "publish"}}


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def koraft_imports(source: Path) -> set[str]:
    """Every koraft module a file imports, at the top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("koraft"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names if alias.name.startswith("koraft"))
    return names


def module_file(name: str) -> str:
    path = Path(*name.split("."))
    return f"{path}/__init__.py" if (ROOT / path).is_dir() else f"{path}.py"


def static_closure(script: str) -> set[str]:
    """koraft files a stage script can reach through imports, lazy ones included."""
    seen, todo = set(), [script]
    while todo:
        for name in koraft_imports(ROOT / todo.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # a module's packages' __init__ files load first
                file = module_file(".".join(parts[:depth]))
                if file not in seen:
                    seen.add(file)
                    todo.append(file)
    return seen


@pytest.fixture(scope="module")
def copied(tmp_path_factory) -> Path:
    """The stage scripts and the package in another folder, as a second clone or `dvc exp run --queue` has them."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("stages", "koraft"):
        shutil.copytree(ROOT / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    return root


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_loads_only_koraft_code_its_deps_cover_and_from_its_own_checkout(name, copied):
    command = STAGES[name]["cmd"].split()
    assert command[:2] == ["python", "-m"] and command[2] == f"stages.{name}", "stages run as modules"
    probe = (f"import json, sys; import {command[2]}; "
             "print(json.dumps(sorted(m.__file__ for n, m in sys.modules.items() "
             "if n.split('.')[0] in ('koraft', 'stages') and getattr(m, '__file__', None))))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=copied, capture_output=True, text=True, check=True)
    loaded = [Path(file).resolve() for file in json.loads(result.stdout.splitlines()[-1])]
    assert all(path.is_relative_to(copied.resolve()) for path in loaded), "imported from another checkout"
    deps = STAGES[name]["deps"]
    for path in [str(path.relative_to(copied.resolve())) for path in loaded] + sorted(
            static_closure(f"stages/{name}.py")):
        if path.startswith("koraft/") or path.startswith("stages/") and path != "stages/__init__.py":
            assert covered(path, deps), f"stage {name} loads {path}, which its deps in dvc.yaml do not cover"


@pytest.mark.parametrize("name", sorted(STAGES))
def test_each_stage_depends_on_no_koraft_code_it_does_not_load(name):
    reached = static_closure(f"stages/{name}.py")
    for dep in STAGES[name]["deps"]:
        if dep.startswith("koraft") and not dep.endswith(".jsonl"):  # data a loaded module reads, not code
            assert any(covered(path, [dep]) for path in reached), f"stage {name} depends on {dep} but never loads it"
    assert not any(dep.startswith("koraft/publish") for dep in STAGES[name]["deps"])


def test_steps_import_only_the_steps_below_them():
    for step in STEPS:
        for source in sorted((ROOT / "koraft" / step).glob("*.py")):
            for name in koraft_imports(source):
                target = name.split(".")[1] if name.count(".") else "koraft"
                assert target in ALLOWED[step], f"{source.relative_to(ROOT)} imports {name}"


def test_no_module_outside_the_step_folders():
    assert sorted(path.name for path in (ROOT / "koraft").glob("*.py")) == ["__init__.py"]
    assert sorted(path.name for path in (ROOT / "koraft").iterdir() if path.is_dir() and path.name != "__pycache__"
                  ) == sorted(STEPS)


def test_every_stage_but_generate_and_evaluate_can_be_restored_from_the_run_cache():
    """DVC saves no run-cache entry for a stage with a persisted output, or an uncached one that is neither a
    metric nor a plot (dvc/stage/__init__.py, DVC 3.67): such a stage is retrained wherever its lock is stale."""
    def run_cached(stage: dict) -> bool:
        for out in stage.get("outs", []):
            options = next(iter(out.values())) if isinstance(out, dict) else {}
            if options.get("persist") or options.get("cache") is False:
                return False
        return True

    # generate persists its teacher calls; evaluate keeps its per-record predictions in git (docs/experiments.md)
    assert sorted(name for name, stage in STAGES.items() if not run_cached(stage)) == ["evaluate", "generate"]


def test_a_publishing_edit_leaves_every_stage_up_to_date_and_an_evaluation_edit_reruns_evaluate_only():
    def affected(changed: str) -> set[str]:
        return {name for name, spec in STAGES.items() if covered(changed, spec["deps"])}

    assert affected("koraft/publish/hub.py") == set()
    assert affected("koraft/evaluation/metrics.py") == {"evaluate", "pairs"}  # the on-policy answers' EM and F1
    assert affected("koraft/training/distill_loss.py") == {"train", "pairs", "prefer", "teacher", "distill"}
    assert affected("koraft/data/raft.py") == {"validate", "split", "raft"}
    assert affected("koraft/data/bm25.py") == {"validate", "split", "raft", "pairs", "evaluate"}  # retriever; abstain
    assert affected("koraft/generation/replies.py") == {"generate"}
    assert affected("koraft/inference/endpoints.py") == {"generate", "pairs", "evaluate"}
    assert affected("koraft/preference/config.py") == {"pairs", "prefer"}
    assert affected("koraft/evaluation/served.py") == {"evaluate"}  # no evaluation code is a dep of generate
    assert affected("koraft/benchmark/harness.py") == {"benchmark"}
    assert affected("koraft/evaluation/loading.py") == {"evaluate", "benchmark"}


def entry_points() -> set[str]:
    """What a user can run: the stage scripts, scripts/, benchmarks/ and the koraft modules with a __main__."""
    found = {str(path.relative_to(ROOT)) for folder in ("stages", "scripts", "benchmarks")
             for path in (ROOT / folder).iterdir() if path.suffix in (".py", ".sh") and path.name != "__init__.py"}
    found |= {".".join(path.relative_to(ROOT).with_suffix("").parts) for path in (ROOT / "koraft").rglob("*.py")
              if 'if __name__ == "__main__"' in path.read_text(encoding="utf-8")}
    return found


def test_design_lists_every_entry_point_with_one_line():
    section = (ROOT / "docs/design.md").read_text(encoding="utf-8").split("## 9. What you run", 1)[1]
    listed = set(re.findall(r"^- `([^`]+)`: \S", section, flags=re.MULTILINE))
    assert len(entry_points()) >= 30 and listed == entry_points()


def test_no_evaluation_module_above_300_lines():
    for path in sorted((ROOT / "koraft/evaluation").glob("*.py")):
        assert len(path.read_text(encoding="utf-8").splitlines()) <= 300, path.name


def test_no_function_below_a_stage_takes_the_params_dict():
    """Each stage loads its section once (load_<section>) and passes only that settings object down. The
    check helpers of koraft/core/config.py take whichever mapping holds the key they check."""
    loaders = {"load_params", "section", "check_seed", "local_presets"}
    for path in sorted(set((ROOT / "koraft").rglob("*.py")) - {ROOT / "koraft/core/config.py"}):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and any(arg.arg == "params" for arg in node.args.args):
                assert node.name.startswith("load_") or node.name.endswith("_section") or node.name in loaders, \
                    f"{path.relative_to(ROOT)}: {node.name} takes params"
