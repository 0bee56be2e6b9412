"""Builds and loads the SRWM C kernel (``csrc/srwm_cpu.c``) with the system C compiler, through ctypes.

The shared library is compiled once (about a second) into ``$METARL_CACHE`` (default
``~/.cache/metarl``), for this CPU (``-march=native``; the cache key includes the CPU's feature flags, so
a shared cache never hands a library to a CPU that cannot run it), and reused by every later process.
The sequence-heads are split across ``torch.get_num_threads()`` threads (ctypes releases the GIL). Set
``METARL_SRWM_KERNEL=torch`` to skip it; when no compiler is found the torch-op path is used and a
warning says so once.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

_SOURCE = Path(__file__).parent / "csrc" / "srwm_cpu.c"
_FLAGS = ["-O3", "-fPIC", "-shared", "-std=c99"]
_loaded = None  # the _Kernel, or False once building failed


def _cpu_signature() -> str:
    """Machine type and CPU feature flags (what -march=native depends on)."""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                flags = line
                break
    except OSError:
        pass
    return platform.machine() + flags


def _build() -> Path:
    source = _SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(_FLAGS).encode() + _cpu_signature().encode()).hexdigest()[:16]
    cache = Path(os.environ.get("METARL_CACHE", Path.home() / ".cache" / "metarl"))
    target = cache / f"srwm_cpu_{digest}.so"
    if target.exists():
        return target
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc/gcc) on PATH")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        partial = Path(tmp) / target.name
        for extra in (["-march=native"], []):  # a compiler without -march=native still builds a portable one
            result = subprocess.run([compiler, *_FLAGS, *extra, str(_SOURCE), "-o", str(partial), "-lm"],
                                    capture_output=True, text=True)
            if result.returncode == 0:
                break
        else:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        os.replace(partial, target)  # atomic: concurrent builders (e.g. Ray actors) never see half a file
    return target


_pool = None


def _parallel(fn, N: int, *arrays) -> None:
    """Call fn(n, *pointers) on slices of the N sequence-heads, one slice per torch thread."""
    global _pool
    parts = max(1, min(torch.get_num_threads(), N))
    if parts == 1:
        fn(N, *(_Kernel._ptr(a) for a in arrays))
        return
    if _pool is None or _pool._max_workers < parts:
        _pool = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="metarl-srwm")
    bounds = [N * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(fn, b - a, *(_Kernel._ptr(x[a:b]) for x in arrays))
               for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()


class _Kernel:
    def __init__(self, lib: ctypes.CDLL):
        self.lib = lib
        for name in ("srwm_forward_f32", "srwm_forward_f64", "srwm_backward_f32", "srwm_backward_f64"):
            getattr(lib, name).restype = None

    @staticmethod
    def _suffix(t: torch.Tensor) -> str:
        return "f32" if t.dtype == torch.float32 else "f64"

    @staticmethod
    def _ptr(t: torch.Tensor):
        assert t.is_contiguous()
        return ctypes.c_void_p(t.data_ptr())

    def forward(self, x, W, Dy):
        """x: [N, T, D], W: [N, D, Dtot] (updated in place) -> (y, W, q, k, b, r)."""
        N, T, D = x.shape
        y = x.new_empty(N, T, Dy)
        qs, ks, bs, rs = x.new_empty(N, T, D), x.new_empty(N, T, D), x.new_empty(N, T, 4), x.new_empty(N, T, W.shape[-1])
        fn = getattr(self.lib, "srwm_forward_" + self._suffix(x))
        _parallel(lambda n, *ptrs: fn(ctypes.c_long(n), ctypes.c_long(T), ctypes.c_long(D), ctypes.c_long(Dy), *ptrs),
                  N, x, W, y, qs, ks, bs, rs)
        return y, W, qs, ks, bs, rs

    def backward(self, x, W, Dy, qs, ks, bs, rs, gy, gW):
        """Reverse pass; W: final weights (consumed). Returns (dx [N, T, D], dW0 [N, D, Dtot])."""
        N, T, D = x.shape
        G = gW.clone().contiguous()
        dx = torch.empty_like(x)
        fn = getattr(self.lib, "srwm_backward_" + self._suffix(x))
        inputs = [a.contiguous() for a in (x, W, qs, ks, bs, rs, gy)]
        _parallel(lambda n, *ptrs: fn(ctypes.c_long(n), ctypes.c_long(T), ctypes.c_long(D), ctypes.c_long(Dy), *ptrs),
                  N, *inputs, G, dx)
        return dx, G


def kernel():
    """The loaded C kernel, or None (torch-op fallback) when disabled or not buildable."""
    global _loaded
    if _loaded is None:
        if os.environ.get("METARL_SRWM_KERNEL", "c") == "torch":
            _loaded = False
        else:
            try:
                _loaded = _Kernel(ctypes.CDLL(str(_build())))
            except (OSError, RuntimeError, subprocess.CalledProcessError) as err:
                detail = getattr(err, "stderr", "") or err
                warnings.warn(f"metarl: SRWM C kernel unavailable ({detail}); using the torch-op path "
                              "(same results, slower). Install a C compiler (gcc) to enable it.")
                _loaded = False
    return _loaded or None
