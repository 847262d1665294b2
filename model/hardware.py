"""What this machine can do, and the process-wide settings that make it fast.

- ``flush_denormals``: ALiBi pushes far-away attention scores so low that exp() lands in
  the subnormal range, which x86 cores process tens of times slower.
- ``cpu_has_bf16_matmul``: bf16 pays off only on CPUs with bf16 matrix instructions.
- ``measured_matmul_flops`` and ``CUDA_PEAK_TFLOPS``: the peaks MFU is measured against.
"""

from __future__ import annotations

import time

import torch

# bf16 dense peaks of common accelerators (TFLOP/s).
CUDA_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def flush_denormals() -> bool:
    """Treat subnormal floats as zero on this CPU (a no-op returning False where unsupported).

    Flushing made ALiBi attention 2-3x faster on x86. Only values below 1.2e-38 change.
    Process-wide, so training and generation entry points call it.
    """
    return torch.set_flush_denormal(True)


def cpu_has_bf16_matmul() -> bool:
    """bf16 autocast pays off on CPUs with bf16 matrix instructions (AMX, AVX512-BF16);
    elsewhere it is emulated and slower than fp32."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    return bool(caps.get("amx_bf16") or caps.get("avx512_bf16"))


def cuda_peak_flops(device: torch.device) -> float | None:
    """The dense bf16 peak of a known GPU, else None."""
    name = torch.cuda.get_device_name(device)
    for key, value in CUDA_PEAK_TFLOPS.items():
        if key in name:
            return value * 1e12
    return None


def measured_matmul_flops(precision: str) -> float:
    """Best-of-3 1024^3 matmul FLOP/s on this CPU now (other load on the machine lowers it)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(1024, 1024, dtype=dtype), torch.randn(1024, 1024, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * 1024**3 / best


def compute_dtype(device: torch.device, fallback: torch.dtype) -> torch.dtype:
    """The matmul dtype autocast would use here (bf16 under CPU autocast), else the tensor's own."""
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return fallback
