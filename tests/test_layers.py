"""The package layout is checked, not only documented: the import contract and what `import ssdcli` loads."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_import_contract_holds() -> None:
    """Layers (pyproject [tool.importlinter]): cli -> deploy -> engine -> inference -> models -> data -> core."""
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    out = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_import_ssdcli_loads_no_workflow_or_cli_module() -> None:
    code = (
        "import sys, ssdcli\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[:2] in "
        "(['ssdcli', 'cli'], ['ssdcli', 'deploy'], ['ssdcli', 'engine']))\n"
        "print(','.join(bad))\n"
        "assert ssdcli.Detector and ssdcli.build_model and ssdcli.available_models()\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == ""


def _function_level_ssdcli_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for func in ast.walk(tree):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ssdcli"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module}")
            elif isinstance(node, ast.Import) and any(a.name.startswith("ssdcli") for a in node.names):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} import")
    return found


def test_library_modules_import_the_package_at_module_level_only() -> None:
    """Function-level imports hide cycles from the contract; only optional third-party dependencies
    (onnxruntime, matplotlib, pycocotools) are imported lazily. ``cli/`` is not covered yet."""
    files = [p for p in (ROOT / "ssdcli").rglob("*.py") if "cli" not in p.relative_to(ROOT / "ssdcli").parts[:1]]
    assert [hit for p in files for hit in _function_level_ssdcli_imports(p)] == []
