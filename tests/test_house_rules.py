"""The house rules of issue #15, checked on the source tree (no imports of the package needed).

- one helper per concept: the MAD and FWHM constants are written only in ``astrid._utils``;
- no module imports another module's private name or another subpackage's private module
  (the shared internals ``astrid._utils``, ``_optional``, ``_locks`` and ``_version`` excepted);
- no test imports a private module;
- no function over 120 lines, no signature over 10 parameters (numba kernels, which must take
  arrays, are listed by name in ``ARRAY_KERNELS`` with the reason).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "astrid"
SHARED_INTERNALS = {"_utils", "_optional", "_locks", "_version"}
MAX_LINES = 120
MAX_PARAMETERS = 10
#: numba kernels whose many array arguments cannot be a dataclass (numba compiles plain arrays).
ARRAY_KERNELS: dict[str, str] = {
    "stamp_design": "astrid.kernel: numba kernel over the stars' stamps and basis arrays",
    "extract_triplets": "astrid.triplets: numba kernel cutting three planes at many positions",
    "render_moffat_stamps": "astrid.simulate: numba kernel drawing every source's Moffat stamp",
    "_resample": "astrid.diffim.alignment: numba kernel resampling data, variance and mask at once",
}


def _modules():
    return sorted(p for p in PACKAGE.rglob("*.py"))


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _resolve(path: Path, node: ast.ImportFrom) -> list[str]:
    if node.level == 0:
        return (node.module or "").split(".")
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return base + (node.module.split(".") if node.module else [])


def _private_import_violations(path: Path) -> list[str]:
    out = []
    importer_package = _module_name(path)[:2]
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(path, node)
            if not target or target[0] != "astrid":
                continue
            for alias in node.names:
                name = alias.name
                is_module = (
                    PACKAGE.parent.joinpath(*target, name).with_suffix(".py").exists()
                    or PACKAGE.parent.joinpath(*target, name).is_dir()
                )
                full = target + [name] if is_module else target
                if name.startswith("_") and not name.startswith("__") and not is_module:
                    out.append(
                        f"{path.relative_to(ROOT)}:{node.lineno} imports private name {name!r}"
                    )
                    continue
                for depth, part in enumerate(full[1:], start=1):
                    if (
                        part.startswith("_")
                        and not part.startswith("__")
                        and part not in SHARED_INTERNALS
                    ):
                        owner = full[:depth]
                        if (
                            full[:2] != importer_package
                            and len(owner) >= 1
                            and owner != importer_package[:depth]
                        ):
                            out.append(
                                f"{path.relative_to(ROOT)}:{node.lineno} imports "
                                f"{'.'.join(full)} (another package's private module)"
                            )
                        break
    return out


def test_no_private_imports_across_modules():
    violations = [v for path in _modules() for v in _private_import_violations(path)]
    assert not violations, "\n".join(violations)


def test_tests_use_the_public_api():
    pattern = re.compile(
        r"(?:from|import)\s+astrid(?:\.\w+)*\._(?!_)\w*|from\s+astrid(?:\.\w+)*\s+import\s+_(?!_)"
    )
    violations = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), start=1):
            if pattern.search(line):
                violations.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    assert not violations, "\n".join(violations)


@pytest.mark.parametrize("constant", [1.4826, 2.3548], ids=["MAD-to-sigma", "sigma-to-FWHM"])
def test_shared_constants_live_in_utils(constant):
    """The constant is written as a number only in astrid._utils (prose in docstrings is fine)."""
    violations = []
    for path in _modules():
        if "_utils" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                if abs(node.value - constant) < 5e-4:
                    violations.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value}")
    assert not violations, "\n".join(violations)


def _functions():
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield path, node


def test_no_long_functions():
    long = [
        f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)"
        for p, n in _functions()
        if n.end_lineno - n.lineno + 1 > MAX_LINES
    ]
    assert not long, "\n".join(long)


def test_no_wide_signatures():
    wide = []
    for p, n in _functions():
        a = n.args
        params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
        if params and params[0].arg in ("self", "cls"):
            params = params[1:]
        if len(params) > MAX_PARAMETERS and n.name not in ARRAY_KERNELS:
            wide.append(f"{p.relative_to(ROOT)}:{n.lineno} {n.name} ({len(params)} parameters)")
    assert not wide, "\n".join(wide)
