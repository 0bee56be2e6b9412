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


class Whole:
    """An argument of :func:`_parallel` passed whole to every slice (not split by rows): a tensor or None."""

    def __init__(self, tensor):
        self.tensor = tensor


def _pointer(a, start: int = 0, stop: int = 0):
    """The C pointer of one argument: NULL for None, the whole tensor for :class:`Whole`, else rows [start:stop]."""
    if a is None:
        return ctypes.c_void_p(None)
    if isinstance(a, Whole):
        return _pointer(a.tensor, 0, len(a.tensor)) if a.tensor is not None else ctypes.c_void_p(None)
    return _Kernel._ptr(a[start:stop])


def _parallel(fn, N: int, *arrays) -> None:
    """Call fn(n, *pointers) on slices of the N sequence-heads, one slice per torch thread. Each argument is
    a tensor whose rows are the sequence-heads (sliced), a :class:`Whole` (shared) or None (NULL)."""
    global _pool
    parts = max(1, min(torch.get_num_threads(), N))
    if parts == 1:
        fn(N, *(_pointer(a, 0, N) for a in arrays))
        return
    if _pool is None or _pool._max_workers < parts:
        _pool = ThreadPoolExecutor(max_workers=parts, thread_name_prefix="metarl-srwm")
    bounds = [N * i // parts for i in range(parts + 1)]
    futures = [_pool.submit(fn, b - a, *(_pointer(x, a, b) for x in arrays))
               for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    for f in futures:
        f.result()


def _longs(*values):
    return tuple(ctypes.c_long(v) for v in values)


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

    def forward(self, x, W, Dy, resets=None):
        """x: [N, T, D], W: [N, D, Dtot] (updated in place) -> (y, W, q, k, b, r, saved).

        resets: None or ``(reset [N, T] bool, Wr [N, D, Dtot], first [N] int64, count)`` (see
        :func:`metarl.ops.srwm.reset_slots`); ``saved`` is None or the states before the resets [count, D, Dtot].
        """
        N, T, D = x.shape
        y = x.new_empty(N, T, Dy)
        qs, ks, bs, rs = x.new_empty(N, T, D), x.new_empty(N, T, D), x.new_empty(N, T, 4), x.new_empty(N, T, W.shape[-1])
        reset = Wr = first = saved = None
        if resets is not None:
            reset, Wr, first, count = resets
            reset, Wr = reset.to(torch.uint8).contiguous(), Wr.contiguous()
            saved = x.new_empty(count, *W.shape[1:])
        fn = getattr(self.lib, "srwm_forward_" + self._suffix(x))
        _parallel(lambda n, *ptrs: fn(*_longs(n, T, D, Dy), *ptrs),
                  N, x, W, y, qs, ks, bs, rs, reset, Wr, first, Whole(saved))
        return y, W, qs, ks, bs, rs, saved

    def backward(self, x, W, Dy, qs, ks, bs, rs, gy, gW, resets=None, saved=None):
        """Reverse pass; W: final weights (consumed). Returns (dx [N, T, D], dW0 [N, D, Dtot], dWr or None)."""
        N, T, D = x.shape
        G = gW.clone().contiguous()
        dx = torch.empty_like(x)
        reset = first = dWr = None
        if resets is not None:
            reset, _, first, _ = resets
            reset, dWr = reset.to(torch.uint8).contiguous(), torch.zeros_like(G)
        fn = getattr(self.lib, "srwm_backward_" + self._suffix(x))
        inputs = [a.contiguous() for a in (x, W, qs, ks, bs, rs, gy)]
        _parallel(lambda n, *ptrs: fn(*_longs(n, T, D, Dy), *ptrs),
                  N, *inputs, G, dx, reset, first, Whole(saved), dWr)
        return dx, G, dWr


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
