"""The source distribution is complete and its metadata has the extras; a failed
extension build is reported at import with its reason."""
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from fastswin import _extension

ROOT = Path(__file__).resolve().parents[1]


def source_files():
    """What an sdist must carry: every file the extension builds from, the package, the
    tests, the build files and the docs."""
    globs = ["csrc/*", "fastswin/**/*.py", "tests/*.py", "benchmarks/*.py"]
    files = {str(path.relative_to(ROOT)) for pattern in globs for path in ROOT.glob(pattern) if path.is_file()}
    return files | {"README.md", "ARCHITECTURE.md", "LICENSE", "pyproject.toml", "setup.py", "MANIFEST.in"}


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    pytest.importorskip("build", reason="the sdist test needs the `build` package (the test extra)")
    out = tmp_path_factory.mktemp("sdist")
    result = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "-o", str(out), str(ROOT)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (archive,) = out.glob("fastswin-*.tar.gz")
    with tarfile.open(archive) as tar:
        return {member.name.split("/", 1)[1]: tar for member in tar.getmembers() if "/" in member.name}, archive


def test_sdist_has_every_source_file(sdist):
    members, _ = sdist
    missing = source_files() - set(members)
    assert not missing, f"missing from the sdist: {sorted(missing)}"
    assert not [name for name in members if name.endswith((".so", ".pyc"))]


def test_sdist_metadata_has_the_extras(sdist):
    _, archive = sdist
    with tarfile.open(archive) as tar:
        pkg_info = tar.extractfile(f"{archive.name[:-len('.tar.gz')]}/PKG-INFO").read().decode()
    for extra in ("bench", "models", "test", "all"):
        assert f"Provides-Extra: {extra}" in pkg_info
    assert "Requires-Dist: torch>=" in pkg_info
    assert "License-Expression: BSD-3-Clause" in pkg_info
    assert 'Requires-Dist: matplotlib; extra == "bench"' in pkg_info


def test_a_failed_build_is_named_at_import(tmp_path, monkeypatch):
    note = tmp_path / "_C_build_error.txt"
    note.write_text("RuntimeError: Error compiling objects for extension\ncsrc/x.cpp:1:1: error: expected ';'\n")
    monkeypatch.setattr(_extension, "BUILD_ERROR", note)
    assert _extension._missing_reason(ImportError("no module named fastswin._C")) == (
        "its build failed: RuntimeError: Error compiling objects for extension | csrc/x.cpp:1:1: error: expected ';'")
    note.unlink()
    assert _extension._missing_reason(ImportError("no module")) == "ImportError: no module"


def test_import_warns_once_when_the_extension_is_missing():
    code = "import sys; sys.modules['fastswin._C'] = None; import fastswin, fastswin.info; print(fastswin.info.report())"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("fastswin: the compiled extension fastswin._C is missing") == 1
    assert "cpu            the compiled extension fastswin._C is not available" in result.stdout
