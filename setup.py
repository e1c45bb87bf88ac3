"""Build the native extensions: Cython for per-call paths, pybind11 for coarse calls.

Why two binders (docs/architecture.md, "Binding choice"): a Cython method call
costs about half a pybind11 one, which matters on per-call paths (ring lookup,
one heartbeat, a breaker check); pybind11 is the more pleasant binder where a
call moves whole arrays or megabytes (the checkpoint codec, write tracking).
Each extension module uses one of the two.  Every extension compiles the shared
C++ core in csrc/ (no Python.h there) as C++17 with -O3 and no -march=native, so
a wheel runs on any CPU of its platform; vector kernels are chosen at run time
(csrc/faultkit/common/cpu.h).  DEBUG=1 builds -O0 -g; SANITIZE=1 adds ASan+UBSan.
"""
import os
import subprocess
import sys
import tempfile

from Cython.Build import cythonize
from pybind11.setup_helpers import Pybind11Extension
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

DEBUG = os.environ.get("DEBUG", "") not in ("", "0")
SANITIZE = os.environ.get("SANITIZE", "") not in ("", "0")
OPT = ["-O0", "-g", "-UNDEBUG"] if DEBUG else ["-O3"]
SAN = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"] if SANITIZE else []
CXXFLAGS = ["-std=c++17", "-fvisibility=hidden", "-Wall", *OPT, *SAN]
CSRC = "csrc"
PKG = "src/faultkit"

# Release builds on Linux drop the symbol tables (about a third of a module's
# size); DEBUG=1 and SANITIZE=1 keep them.
LINUX = sys.platform.startswith("linux")
RELEASE = not DEBUG and not SANITIZE
LDFLAGS = [*SAN, *(["-Wl,--strip-all"] if LINUX and RELEASE else [])]


def cython_ext(module, *, sources=()):
    """A Cython extension faultkit.<module> from src/faultkit/<module as path>.pyx."""
    path = module.replace(".", "/")
    return Extension(
        f"faultkit.{module}",
        [f"{PKG}/{path}.pyx", *(f"{CSRC}/faultkit/{s}" for s in sources)],
        include_dirs=[CSRC],
        language="c++",
        extra_compile_args=CXXFLAGS,
        extra_link_args=LDFLAGS,
    )


def pybind_ext(module, *, sources=()):
    """A pybind11 extension faultkit.<module> from src/faultkit/<module as path>.cpp."""
    path = module.replace(".", "/")
    return Pybind11Extension(
        f"faultkit.{module}",
        [f"{PKG}/{path}.cpp", *(f"{CSRC}/faultkit/{s}" for s in sources)],
        include_dirs=[CSRC],
        cxx_std=17,
        extra_compile_args=CXXFLAGS,
        extra_link_args=LDFLAGS,
    )


def _openssl_candidates():
    """(include_dirs, library_dirs) pairs to try for OpenSSL 3, most specific first.

    FAULTKIT_OPENSSL_INCLUDE / FAULTKIT_OPENSSL_LIB name a non-default install
    (cibuildwheel sets them for EPEL's openssl3-devel on manylinux_2_28, which
    puts OpenSSL 3 beside the system's 1.1: /usr/include/openssl3 and
    /usr/lib64/openssl3); then pkg-config's libcrypto3 (that same package) and
    libcrypto; then the compiler's default paths.
    """
    inc = os.environ.get("FAULTKIT_OPENSSL_INCLUDE", "")
    lib = os.environ.get("FAULTKIT_OPENSSL_LIB", "")
    if inc or lib:
        yield ([inc] if inc else []), ([lib] if lib else [])
    for mod in ("libcrypto3", "libcrypto"):
        try:
            r = subprocess.run(["pkg-config", "--cflags-only-I", "--libs-only-L", mod],
                               capture_output=True, text=True)
        except OSError:
            break
        if r.returncode == 0:
            words = r.stdout.split()
            yield [w[2:] for w in words if w.startswith("-I")], [w[2:] for w in words if w.startswith("-L")]
    yield [], []


def find_openssl3():
    """(include_dirs, library_dirs) where <openssl/hmac.h> of OpenSSL >= 3 compiles and
    links with -lcrypto; None if nowhere.

    The native heartbeat verifier (detect._recv) needs it; without it that
    module is not built and the receiver keeps its Python path (same wire
    format, slower; ``faultkit.detect.transport.HAVE_NATIVE`` says which a
    build has).  FAULTKIT_NO_OPENSSL=1 forces that fallback.
    """
    if os.environ.get("FAULTKIT_NO_OPENSSL", "") not in ("", "0"):
        return None
    test = ("#include <openssl/hmac.h>\n#include <openssl/evp.h>\n"
            "#if OPENSSL_VERSION_NUMBER < 0x30000000L\n#error old\n#endif\n"
            "int main(void) { return EVP_MAC_fetch(0, \"HMAC\", 0) == 0; }\n")
    cc = os.environ.get("CC", "cc")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.c")
        with open(src, "w") as f:
            f.write(test)
        for incs, libs in _openssl_candidates():
            cmd = [cc, *(f"-I{i}" for i in incs), src, "-o", os.path.join(d, "t"),
                   *(f"-L{x}" for x in libs), "-lcrypto"]
            try:
                r = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except OSError:
                return None
            if r.returncode == 0:
                return incs, libs
    return None


CYTHON_EXTENSIONS = [
    # XXH3-64 of keys, shared by every pillar
    cython_ext("_common.xxh3"),
    # Detect: the heartbeat table
    cython_ext("detect._table"),
    # Balance: the ring (and the balancer base), then jump, rendezvous, Maglev
    cython_ext(
        "balance._ring",
        sources=["balance/ring_build.cc", "balance/ring_snapshot.cc", "balance/ring_writer.cc"],
    ),
    cython_ext("balance._choose", sources=["balance/choose.cc"]),
    # Balance: live replicas across failure domains (Cluster.replicas)
    cython_ext("balance._spread"),
    # Contain: circuit breaker state machine
    cython_ext("contain._breaker"),
    # Recover: the write-ahead journal (framing, scanner, group commit)
    cython_ext("recover._journal", sources=["recover/journal.cc"]),

    # Contain: GCRA rate limiter (per-key table in native memory)
    cython_ext("contain._rate"),
    # Contain: retries (the success path in C)
    cython_ext("contain._retry"),
]
PYBIND_EXTENSIONS = [
    # Recover: the checkpoint codec
    pybind_ext("recover._codec", sources=["recover/codec_io.cc"]),
    # Recover: write tracking for incremental checkpoints (Linux >= 6.7)
    pybind_ext("recover._track", sources=["recover/write_tracker.cc"]),
]
_openssl = find_openssl3()
if _openssl is not None:
    # Detect: batched heartbeat receive and HMAC verification (libcrypto)
    _recv = pybind_ext("detect._recv", sources=["detect/packet_filter.cc", "detect/hmac_sha256.cc"])
    _recv.include_dirs = [*_recv.include_dirs, *_openssl[0]]
    _recv.library_dirs = [*_openssl[1]]
    _recv.libraries = ["crypto"]
    PYBIND_EXTENSIONS.append(_recv)


class ParallelBuildExt(build_ext):
    """build_ext that compiles the extensions one per CPU unless ``-j`` says otherwise.

    pip and ``python -m build`` never pass ``-j``; serial builds made every CI
    round trip (one per interpreter) pay the whole compile on one core.
    """

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1


setup(
    cmdclass={"build_ext": ParallelBuildExt},
    ext_modules=cythonize(
        CYTHON_EXTENSIONS,
        include_path=["src"],
        # binding=False: def functions and methods become plain builtins, which
        # CPython calls through its specialized paths (a lookup method call is
        # ~40% cheaper than through a cyfunction); "clinic" signatures keep
        # inspect.signature() working on them.
        compiler_directives={"language_level": "3", "embedsignature": True,
                             "embedsignature.format": "clinic", "binding": False},
        build_dir="build/cython",  # generated C++ stays out of src/
        # Processes, forked: spawn (macOS, Windows) would re-run this script.
        nthreads=(os.cpu_count() or 1) if LINUX else 0,
        gdb_debug=DEBUG,
    )
    + PYBIND_EXTENSIONS,
)
