"""exporter/_tally.c under AddressSanitizer and UndefinedBehaviorSanitizer: the module is built
again into a temporary directory with the flags setup.py's build uses (Python's sysconfig CFLAGS,
CCSHARED, LDSHARED) plus the sanitizers', and the differential tests (test_tally.py) run in a
subprocess that imports that build, with the compiler's libasan preloaded (the ASan runtime must
be the first library loaded; Python itself is not built with it). Any out-of-bounds access,
use-after-free or undefined behaviour aborts the run. The hostile corpus (hostile_corpus.py) is
then fed through the sanitized loop as well. A canary extension with a deliberate use
after free and a deliberate undefined shift, run the same way, shows the harness catches both."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import exporter

ROOT = Path(__file__).resolve().parents[2]
SANITIZE = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
            "-fno-sanitize-recover=all"]
GCC = shutil.which("gcc")


def _libasan() -> str | None:
    if GCC is None:
        return None
    out = subprocess.run([GCC, "-print-file-name=libasan.so"], capture_output=True, text=True)
    path = out.stdout.strip()
    # gcc echoes the bare name back when it has no such file
    return path if os.path.isabs(path) and os.path.exists(path) else None


LIBASAN = _libasan()
pytestmark = pytest.mark.skipif(LIBASAN is None, reason="needs gcc and its libasan (Debian: "
                                "gcc-12 depends on libasan8, so `apt-get install gcc` has it)")


def build(source: Path, module: str, out: Path) -> Path:
    """source compiled into package dir `out` as `module`, as setuptools' build_ext compiles
    an extension (CC CFLAGS CCSHARED -I<include> -c; LDSHARED), plus the sanitizer flags."""
    var = sysconfig.get_config_var
    obj = out / (module + ".o")
    lib = out / (module + var("EXT_SUFFIX"))
    cc = [GCC, *shlex.split(var("CFLAGS")), *shlex.split(var("CCSHARED")), *SANITIZE,
          "-I" + sysconfig.get_paths()["include"], "-c", str(source), "-o", str(obj)]
    ld = [GCC, *shlex.split(var("LDSHARED"))[1:], *SANITIZE, str(obj), "-o", str(lib)]
    for cmd in (cc, ld):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        assert proc.returncode == 0, f"{shlex.join(cmd)}\n{proc.stderr}"
    return lib


def run_sanitized(lib_dir: Path, code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`code` in a Python whose `exporter` package finds its submodules in lib_dir first, so
    `exporter._tally` is the sanitized build (and the rest of the package the real one)."""
    boot = (f"import exporter, sys; exporter.__path__.insert(0, {str(lib_dir)!r})\n"
            + textwrap.dedent(code))
    env = {k: v for k, v in os.environ.items() if k != "TAILPAGE_PURE_PYTHON"}
    env = {**env, "LD_PRELOAD": LIBASAN or "",
           "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    return subprocess.run([sys.executable, "-c", boot], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=timeout)


def test_tally_differential_tests_pass_under_asan_and_ubsan(tmp_path: Path) -> None:
    lib_dir = tmp_path / "exporter"
    lib_dir.mkdir()
    lib = build(ROOT / "exporter" / "_tally.c", "_tally", lib_dir)
    # the wheel test builds without a compiler and the "pure Python" ones run the other loop:
    # nothing of _tally.c runs in them
    proc = run_sanitized(lib_dir, f"""
        import pytest
        rc = pytest.main(["-q", "-x", "-rs", "-p", "no:cacheprovider", "-o", "addopts=",
                          "-k", "not wheel and not pure",
                          {str(ROOT / "tests" / "exporter" / "test_tally.py")!r}])
        from exporter import tally
        print("TALLY_FILE", tally._c_loop().__file__, tally.loop().name)
        # then the hostile corpus through the C loop, whole files in 64 KiB reads
        sys.path.insert(0, {str(ROOT / "tests" / "exporter")!r})
        from hostile_corpus import config_for, corpus, file_bytes
        from exporter import config
        from exporter.pipeline import Pipeline
        for case in corpus():
            cfg = {{**config_for(case), "format": case.fmt}}
            pipe = Pipeline(config.Config(config.validate(cfg, "<sanitizer>")))
            src, data = pipe.open(case.name), file_bytes(case)
            for i in range(0, len(data), 1 << 16):
                src.feed(data[i:i + (1 << 16)])
            src.flush()
        print("CORPUS_DONE", pipe.loop.name)
        sys.exit(int(rc))
        """)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert f"TALLY_FILE {lib} C loop" in proc.stdout, \
        "the sanitized build was not the one imported, or not the loop the exporter chose"
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-3000:]
    assert "CORPUS_DONE C loop" in proc.stdout
    assert "Sanitizer" not in out and "runtime error" not in out, out[-6000:]


CANARY = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdlib.h>
/* bug(0): none; bug(1): a use after free (ASan); bug(2): a shift past int's width (UBSan) */
static PyObject *bug(PyObject *self, PyObject *arg) {
    long k = PyLong_AsLong(arg);
    char *p = malloc(8);
    volatile int r = 0;
    p[0] = 1;
    free(p);
    if (k == 1)
        r = p[0];
    if (k == 2)
        r = 1 << (int)(k + 30);
    return PyLong_FromLong(r);
}
static PyMethodDef methods[] = {{"bug", bug, METH_O, NULL}, {NULL, NULL, 0, NULL}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "_canary", NULL, -1, methods};
PyMODINIT_FUNC PyInit__canary(void) { return PyModule_Create(&mod); }
"""


def test_the_harness_catches_memory_errors_and_undefined_behaviour(tmp_path: Path) -> None:
    src = tmp_path / "_canary.c"
    src.write_text(CANARY)
    lib_dir = tmp_path / "exporter"
    lib_dir.mkdir()
    build(src, "_canary", lib_dir)
    for k, report in ((0, None), (1, "AddressSanitizer: heap-use-after-free"),
                      (2, "runtime error: shift exponent 32 is too large")):
        proc = run_sanitized(lib_dir, f"from exporter import _canary; _canary.bug({k})")
        if report is None:
            assert proc.returncode == 0, proc.stderr[-3000:]
        else:
            assert proc.returncode != 0 and report in proc.stderr, proc.stderr[-3000:]


def test_the_package_is_the_real_one() -> None:
    """The harness inserts its directory into this package's __path__: it must be the
    worktree's package, not an installed copy the sanitized module would not match."""
    assert Path(exporter.__file__).resolve().parent == ROOT / "exporter"
