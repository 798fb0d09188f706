"""bf16 on CPUs that multiply it natively: when to use it, and the dtype to serve in.

CPUs with AMX (Intel Sapphire Rapids and later) run bf16 matrix products several times faster than fp32
(measured on this project's 2-core machine: a 2048x2048 matmul at 2,338 GFLOP/s in bf16 against 361 in fp32), and
CPUs with AVX512-BF16 but no AMX (Intel Cooper Lake, AMD Zen 4 and later) about 2.5x (the same machine's CPU without
AMX: 387 against 154; the shipped default's views encoded 1.5-2.7x faster in batches of 32, one scan end to end
as fast or faster: `bench/predict.py`, docs/RESULTS.md). Without either, bf16 is emulated and slower than fp32, so
everything here falls back to fp32. `AFFECTVLM_DTYPE=float32` (or `bfloat16`) overrides the choice.
"""

from __future__ import annotations

import functools
import os
import warnings

import torch

from .scan.types import InputError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware: AMX tiles, or AVX512-BF16 dot products."""
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        probe = getattr(torch.cpu, name, None)
        try:
            if probe is not None and probe():
                return True
        except RuntimeError:
            continue
    return False


def serving_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """The dtype to run inference in on `device`: `AFFECTVLM_DTYPE` if set, else bf16 where the hardware
    multiplies it natively (CPUs with AMX or AVX512-BF16, bf16-capable GPUs), else fp32."""
    forced = os.environ.get("AFFECTVLM_DTYPE", "").strip().lower()
    if forced:
        if forced not in _DTYPES:
            raise ValueError(f"AFFECTVLM_DTYPE must be one of {sorted(_DTYPES)}, got {forced!r}")
        return _DTYPES[forced]
    device = torch.device(device)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else torch.float32


_DEVICE_TYPES = ("cpu", "cuda", "mps")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`device` checked against this machine (None: cuda when available, else cpu); `InputError` for a device
    that is unknown or not on this machine."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        parsed = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.type not in _DEVICE_TYPES:
        raise InputError(f"unknown device {str(device)[:40]!r}; use cpu or cuda")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise InputError("CUDA is not available on this machine; use cpu (--device cpu)")
    if parsed.type == "cuda" and (parsed.index or 0) >= torch.cuda.device_count():
        raise InputError(f"no GPU {parsed.index}: this machine has {torch.cuda.device_count()}")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise InputError("MPS is not available on this machine; use cpu (--device cpu)")
    return parsed


def resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    """A torch dtype or its name ("bfloat16", "bf16", "float16", "fp16", "float32", "fp32"); None: the serving
    dtype of `device` (`affectvlm.precision.serving_dtype`). `InputError` for anything else."""
    if dtype is None:
        try:
            return serving_dtype(device)
        except ValueError as err:  # a bad AFFECTVLM_DTYPE
            raise InputError(str(err)) from None
    names = {**_DTYPES, "float16": torch.float16, "fp16": torch.float16}
    key = dtype.strip().lower().removeprefix("torch.") if isinstance(dtype, str) else None
    if key in names:
        dtype = names[key]
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise InputError(f"unknown dtype {str(dtype)[:40]!r}; use one of {', '.join(sorted(names))}")
    if dtype == torch.float16 and device.type == "cpu":  # no CPU here multiplies it natively: a scan took 115 s
        warnings.warn("float16 on a CPU is emulated and slow (minutes a scan): bfloat16 or float32 are fast", stacklevel=3)
    return dtype


__all__ = ["cpu_has_native_bf16", "resolve_device", "resolve_dtype", "serving_dtype"]
