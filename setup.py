"""Build the native extensions: Cython for per-call paths, pybind11 for coarse calls.

See DESIGN.md, "Binding choice".  Every extension compiles the shared C++
core in csrc/ (headers, no Python.h) as C++17 with -O3 and no -march=native,
so a wheel runs on any CPU of its platform.  DEBUG=1 builds -O0 -g.
"""
import os

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup

DEBUG = os.environ.get("DEBUG", "") not in ("", "0")
OPT = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"]
CXXFLAGS = ["-std=c++17", "-fvisibility=hidden", "-Wall", *OPT]
CSRC = "csrc"


def cython_ext(name, *, sources=()):
    """A Cython extension faultkit.<name> from src/faultkit/<name>.pyx plus C++ sources."""
    return Extension(
        f"faultkit.{name}",
        [f"src/faultkit/{name}.pyx", *sources],
        include_dirs=[CSRC],
        language="c++",
        extra_compile_args=CXXFLAGS,
    )


def pybind_ext(name, *, sources=()):
    """A pybind11 extension faultkit.<name> from src/faultkit/<name>.cpp plus C++ sources."""
    return Pybind11Extension(
        f"faultkit.{name}",
        [f"src/faultkit/{name}.cpp", *sources],
        include_dirs=[CSRC],
        cxx_std=17,
        extra_compile_args=CXXFLAGS,
    )


CYTHON_EXTENSIONS = [
    cython_ext("_hash"),
    cython_ext("_detect"),
    # Balance: consistent hashing (ring, ketama, jump, rendezvous, Maglev)
    cython_ext("_ring", sources=["csrc/faultkit/ring.cc"]),
    cython_ext("_balance", sources=["csrc/faultkit/balance.cc"]),
    # Contain: circuit breaker state machine
    cython_ext("_breaker"),
]
PYBIND_EXTENSIONS = [
    pybind_ext("_codec", sources=[f"{CSRC}/faultkit/codec_io.cc"]),
    # Recover: write tracking for incremental checkpoints (Linux >= 6.7)
    pybind_ext("_track", sources=[f"{CSRC}/faultkit/write_tracker.cc"]),
]

setup(
    ext_modules=cythonize(
        CYTHON_EXTENSIONS,
        include_path=[CSRC, "src"],
        # binding=False: def functions and methods become plain builtins, which
        # CPython calls through its specialized paths (a lookup method call is
        # ~40% cheaper than through a cyfunction); "clinic" signatures keep
        # inspect.signature() working on them.
        compiler_directives={"language_level": "3", "embedsignature": True,
                             "embedsignature.format": "clinic", "binding": False},
        build_dir="build/cython",  # generated C++ stays out of src/
        gdb_debug=DEBUG,
    )
    + PYBIND_EXTENSIONS,
)
