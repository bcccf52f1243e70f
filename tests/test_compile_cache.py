"""Where compiled kernels are cached: a folder per kernel-source version, never the package."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numba

import nnserve.kernels
import nnserve.model
from nnserve.kernels import compile_cache

PACKAGE = Path(nnserve.kernels.__file__).parent


def test_the_cache_folder_is_named_after_every_kernel_source(tmp_path, monkeypatch):
    """Changing any kernel file, not only the one a function lives in, changes the folder."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(numba.config, "CACHE_DIR", numba.config.CACHE_DIR)  # restored afterwards
    first = compile_cache.configure()
    assert Path(first).parent == tmp_path and Path(first).name.startswith("nnserve-")
    digest = compile_cache.kernel_sources_digest()
    copy = tmp_path / "kernels"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "losses.py").write_text((copy / "losses.py").read_text() + "\n# changed\n")
    changed = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import compile_cache; "
         "print(compile_cache.kernel_sources_digest())", str(copy)],
        capture_output=True, text=True, check=True).stdout.strip()
    assert changed != digest


def test_without_numba_cache_dir_the_cache_is_in_the_user_cache_and_the_package_is_untouched(tmp_path):
    """With NUMBA_CACHE_DIR unset the kernels load from (and write to) XDG_CACHE_HOME/nnserve/numba,
    and nothing is written beside the installed package (which may be read-only)."""
    folder = Path(nnserve.kernels.CACHE_DIR)
    target = tmp_path / "nnserve" / "numba" / folder.name
    shutil.copytree(folder, target)  # this suite's compiled kernels: loading, not compiling
    before = {path for path in PACKAGE.rglob("*") if "__pycache__" not in path.parts}
    env = {key: value for key, value in os.environ.items() if key != "NUMBA_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path)
    script = ("import nnserve.kernels as k, nnserve.model as m; m.warmup(); print(k.CACHE_DIR)")
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                         check=True, timeout=300).stdout.strip()
    assert Path(out) == target
    assert any(target.rglob("*.nbi")) and any(target.rglob("*.nbc"))
    after = {path for path in PACKAGE.rglob("*") if "__pycache__" not in path.parts}
    assert after == before


def test_the_model_layer_is_outside_the_cache_key(tmp_path):
    """Editing the model layer (Network, its validation, the fit loop) changes no kernel's
    cache folder: the digest covers nnserve.kernels only, and that holds compiled code only."""
    model_layer = Path(nnserve.model.__file__).parent
    copy = tmp_path / "nnserve"
    shutil.copytree(PACKAGE, copy / "kernels", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(model_layer, copy / "model", ignore=shutil.ignore_patterns("__pycache__"))
    digest = compile_cache.kernel_sources_digest()
    for path in (copy / "model").glob("*.py"):
        path.write_text(path.read_text() + "\n# changed\n")
    edited = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import compile_cache; "
         "print(compile_cache.kernel_sources_digest())", str(copy / "kernels")],
        capture_output=True, text=True, check=True).stdout.strip()
    assert edited == digest


def test_touching_a_model_layer_file_compiles_nothing(tmp_path):
    """After a model-layer file is touched, importing and warming up again loads every kernel
    from the cache: no file in the cache folder is written."""
    folder = Path(nnserve.kernels.CACHE_DIR)
    cache = tmp_path / "numba"
    shutil.copytree(folder, cache / folder.name)  # this suite's compiled kernels
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    script = "import nnserve.model as m; m.warmup()"
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    before = {path: path.stat().st_mtime_ns for path in cache.rglob("*")}
    network_file = Path(nnserve.model.__file__).parent / "network.py"
    os.utime(network_file)  # touch: a new mtime, as an editor's save gives
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    after = {path: path.stat().st_mtime_ns for path in cache.rglob("*")}
    assert after == before
