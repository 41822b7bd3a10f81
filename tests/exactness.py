"""Comparing two float32 computations of the same quantities that round differently.

A tensor matches when it is within ``rel`` of the expected tensor's largest absolute value. Some
quantities are zero in exact arithmetic (a bias followed by a batch norm has no gradient), so both
float32 values are pure rounding noise; for those the candidate must be no further from a float64
run ("truth") than 4x the expected path is, plus ``rel`` of the truth's scale.
"""

from __future__ import annotations

import pytest
import torch

# The same comparisons on a GPU, where one is present.
requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]


def assert_matches(got: dict, expected: dict, truth: dict, rel: float) -> None:
    """Every tensor of ``got`` equals ``expected``'s within ``rel`` of its scale (or, for rounding
    noise, is as close to ``truth`` (float64) as ``expected`` is); integer tensors equal exactly."""
    assert got.keys() == expected.keys()
    for key, want in expected.items():
        have = got[key]
        if not want.is_floating_point():
            assert torch.equal(have, want), key
            continue
        scale = want.abs().max().item()
        error = (have.double() - want.double()).abs().max().item()
        if error <= rel * scale:
            continue
        exact = truth[key].double()
        expected_error = (want.double() - exact).abs().max().item()
        got_error = (have.double() - exact).abs().max().item()
        bound = 4 * expected_error + rel * exact.abs().max().item()
        assert got_error <= bound, (
            f"{key}: error {error:.3g} vs scale {scale:.3g}; vs float64 {got_error:.3g} > {bound:.3g}"
        )
