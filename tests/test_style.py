"""Lint, format and public-docstring checks, run by the test command (issue #15).

ruff (configured in pyproject.toml, line length 100) checks and formats the package, the tests
and the benchmarks; numpydoc validates the docstrings of every public function and class
(everything in the ``__all__`` of ``astrid`` and of its public subpackages) against the checks
in ``NUMPYDOC_CHECKS``.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ["astrid", "tests", "benchmarks"]

#: numpydoc checks enforced on public docstrings (numpydoc.readthedocs.io, "Validation"):
#: every docstring present and well formed; every parameter documented, with a type and a
#: description; no documented parameter that does not exist; returns and yields described.
# fmt: off
NUMPYDOC_CHECKS = (
    "GL01", "GL02", "GL03", "GL05", "GL06", "GL07", "GL08", "GL09", "GL10",
    "SS01", "SS02", "SS03", "SS04", "SS06",
    "PR01", "PR02", "PR03", "PR04", "PR05", "PR06", "PR07", "PR08", "PR09", "PR10",
    "RT01", "RT02", "RT03", "RT04", "RT05",
    "YD01",
)
# fmt: on


def _ruff(*args: str) -> subprocess.CompletedProcess:
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed: it is in the test extra (pip install -e '.[test]')")
    return subprocess.run([ruff, *args, *SOURCES], cwd=ROOT, capture_output=True, text=True)


def test_ruff_check():
    result = _ruff("check", "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format():
    result = _ruff("format", "--check", "--no-cache")
    assert result.returncode == 0, "run `ruff format astrid tests benchmarks`:\n" + result.stdout


def _public_objects():
    import astrid

    modules = [astrid, *(getattr(astrid, name) for name in sorted(astrid._LAZY_SUBMODULES))]
    seen = {}
    for module in modules:
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                seen.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return dict(sorted(seen.items()))


def _documented_attributes(obj) -> set[str]:
    """Names in a class's numpydoc Attributes section (dataclasses document their fields there)."""
    from numpydoc.docscrape import ClassDoc

    if not inspect.isclass(obj):
        return set()
    doc = ClassDoc(obj, config={"show_class_members": False})
    return {item.name.split(":")[0].strip() for item in doc["Attributes"]}


def docstring_problems(qualified: str, obj) -> list[str]:
    """numpydoc problems of one public object, among ``NUMPYDOC_CHECKS``."""
    from numpydoc.validate import validate

    problems = []
    for code, message in validate(qualified)["errors"]:
        if code not in NUMPYDOC_CHECKS:
            continue
        if code == "PR01" and dataclasses.is_dataclass(obj):
            missing = set(re.findall(r"'([^']+)'", message))
            if missing <= _documented_attributes(obj):
                continue
        problems.append(f"{qualified}: {code} {message}")
    return problems


def test_public_docstrings_follow_numpydoc():
    pytest.importorskip("numpydoc")
    failures = [
        p
        for qualified, obj in _public_objects().items()
        for p in docstring_problems(qualified, obj)
    ]
    assert not failures, f"{len(failures)} docstring problems:\n" + "\n".join(failures)
