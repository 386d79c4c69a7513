"""Devices, dtypes and the tolerance rule shared by the op tests."""

import pytest
import torch

import rdnas

CUDA_OK = torch.cuda.is_available() and rdnas.built_with_cuda()

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]


def assert_within_reference_error(result, reference64, same_precision_torch, *, floor):
    """The flash-attention rule for reduced precision: our error against the float64 reference is at most twice
    the error of PyTorch computing the same thing in the same precision, plus a small floor (for results where
    PyTorch happens to be exact). NaN must appear exactly where the reference has it."""
    result64 = result.double()
    reference64 = reference64.double()
    torch_error = (same_precision_torch.double() - reference64).abs().nan_to_num(0.0).max() if result.numel() else 0
    our_error = (result64 - reference64).abs().nan_to_num(0.0).max() if result.numel() else 0
    assert torch.equal(result64.isnan(), reference64.isnan())
    assert our_error <= 2 * torch_error + floor, f"error {our_error} vs torch's {torch_error} (floor {floor})"
