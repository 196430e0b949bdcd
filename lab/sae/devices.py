"""Where an SAE trains: devices by their full name, rows kept on a device while they fit, and
TF32 matmuls on CUDA for a block (lab.sae.train and lab.laminar use them)."""
from __future__ import annotations

import contextlib

import torch

from lab.sae.model import as_rows


def as_device(device: str | torch.device | None) -> torch.device:
    """A device with its index ("cuda" -> "cuda:0"), so it compares equal to a tensor's."""
    device = torch.device(device or "cpu")
    if device.index is None and device.type != "cpu":
        return torch.device(device.type, torch.cuda.current_device() if device.type == "cuda" else 0)
    return device


def rows_on(acts: torch.Tensor, device: torch.device) -> torch.Tensor:
    """as_rows (float32 [rows, d_in], finite), without a trip through the CPU for rows that
    are already on the (non-CPU) `device`."""
    acts = torch.as_tensor(acts).detach()
    if acts.device.type == "cpu" or acts.device != device:
        return as_rows(acts)
    acts = acts.float()
    if acts.ndim != 2 or not torch.isfinite(acts).all():
        return as_rows(acts)   # its one-sentence error
    return acts


def free_bytes(device: torch.device) -> int | None:
    """Free memory of an accelerator (None for the CPU: rows already sit in its memory)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "mps":
        return torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
    return None


def fits(device: torch.device, nbytes: int, fraction: float) -> bool:
    """Whether `nbytes` fit in `fraction` of the device's free memory (always, on the CPU)."""
    free = free_bytes(device)
    return free is None or nbytes <= fraction * free


@contextlib.contextmanager
def matmul_precision(tf32: bool):
    """TF32 matmuls on CUDA inside the block (float32 storage, ~10-bit mantissa products);
    the process-wide setting comes back afterwards."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(before)
