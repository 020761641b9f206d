"""dvc.yaml and dvc.lock tell the truth about the code: every module a stage runs is a declared
dependency (so DVC reruns the stage when it changes), and the committed lock was made by the
committed code (so `metrics/` in git is what this code produces)."""

import ast
import hashlib
from pathlib import Path

import pytest
import yaml

from conftest import REPO

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def module_file(name: str) -> Path | None:
    """The file of a project module (captioning.x, stages.x), or None for anything else."""
    if name.split(".")[0] not in ("captioning", "stages"):
        return None
    path = REPO.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_files(script: Path) -> set[str]:
    """Every project file `script` imports, directly or through other project modules (lazy imports too)."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                parts = name.split(".")
                for i in range(1, len(parts) + 1):  # a.b.c imports a and a.b too (their __init__)
                    if (found := module_file(".".join(parts[:i]))) is not None:
                        todo.append(found)
    return {str(p.relative_to(REPO)) for p in seen}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_imported_module_is_a_declared_dependency(stage):
    script = REPO / (STAGES[stage]["cmd"].split()[-1].replace(".", "/") + ".py")
    declared = {str(d) for d in STAGES[stage]["deps"]}
    missing = sorted(imported_files(script) - declared)
    assert not missing, f"dvc.yaml stage {stage} imports but does not declare: {missing}"


def test_lock_matches_the_committed_code():
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    stale = [f"{stage}: {dep['path']}" for stage, entry in lock.items() for dep in entry.get("deps", [])
             if dep["path"].endswith(".py")
             and hashlib.md5((REPO / dep["path"]).read_bytes()).hexdigest() != dep.get("md5")]
    assert not stale, f"dvc.lock is stale (rerun `make run`, commit dvc.lock and metrics/): {stale}"


def test_lock_has_every_stage_of_dvc_yaml():
    lock = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]
    assert set(lock) == set(STAGES)
