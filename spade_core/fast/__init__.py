"""Exact fast inference for ``SPADEGenerator``: ``optimize_generator(generator) -> nn.Module``.

Built on the generator's own per-pattern SPADE (``spade_core.models.patterns``: one-hot convs as
look-ups, SPADE's scale and shift computed once per distinct label window and gathered per
pixel; dense where a layout has too many windows) and its public block ``schedule()``, with
inference-only extras that do not change what is computed (only float rounding, well within
1e-4 in float32):

* Eval-mode spectral norm and batch norm are fixed linear maps: they are folded into plain
  weights, and gamma/beta become one merged layer (``generator``).
* Wide 3x3 convs on small maps (SPADE's 256-1024-channel convs at 8x8-64x64) run as Winograd
  F(2x2, 3x3) (``winograd``: 2.25x fewer multiplies, float32 error of the same order); maps of a
  few hundred pixels use im2col + one matmul; 1x1 shortcuts are plain matmuls.
* On the CPU, maps from 32x32 up are channels-last: each pixel's scale and shift are one
  contiguous row of the pattern table (a memory-speed gather), and Winograd needs no pixel
  shuffles; oneDNN's direct NHWC convs round a little worse per conv, which the output does not show.
* Large per-call buffers (modulated maps, upsampled maps, shortcuts) are reused between calls,
  per thread (``workspace``).

Inputs that are not exact one-hot maps go through the plain generator.
"""

from .generator import FastSPADEGenerator, optimize_generator

__all__ = ["FastSPADEGenerator", "optimize_generator"]
