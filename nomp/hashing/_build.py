"""cffi builder for nomp.hashing._native (out-of-line API mode).

Run by setuptools at install time through ``cffi_modules`` in setup.py; it
imports nothing from nomp. For a quick in-place build during development,
run ``python nomp/hashing/_build.py`` from the repository root.
"""

from __future__ import annotations

import os
import platform

from cffi import FFI

_HERE = os.path.dirname(os.path.abspath(__file__))
_CSRC = os.path.join(_HERE, "csrc")
_SOURCES = ["sha256.c", "scrypt.c", "share.c", "workers.c", "send.c", "keccak.c", "ethash.c"]


def _compile_args() -> list[str]:
    args = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-fno-strict-aliasing"]
    # SIMD code paths are chosen at run time (CPUID, function clones), so
    # the baseline stays portable; NOMP_NATIVE_CFLAGS=1 tunes for this CPU.
    if os.environ.get("NOMP_NATIVE_CFLAGS") == "1" and platform.machine() in ("x86_64", "AMD64"):
        args.append("-march=native")
    return args


ffibuilder = FFI()
with open(os.path.join(_CSRC, "nomp_hash.h"), encoding="ascii") as header:
    ffibuilder.cdef(header.read())
ffibuilder.set_source(
    "nomp.hashing._native",
    '#include <stddef.h>\n#include <stdint.h>\n#include "nomp_hash.h"\n',
    sources=[os.path.relpath(os.path.join(_CSRC, name)) for name in _SOURCES],
    include_dirs=[os.path.relpath(_CSRC)],
    extra_compile_args=_compile_args(),
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
