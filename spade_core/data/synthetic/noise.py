"""Seeded noise fields and the resampling helpers the layout and the textures are built from."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def spectral_noise(rng: np.random.Generator, shape: tuple[int, int], beta: float,
                   stretch: tuple[float, float] = (1.0, 1.0)) -> np.ndarray:
    """Periodic 1/f^beta noise (zero mean, unit std); stretch (sy, sx) > 1 elongates along that axis."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None] * stretch[0]
    fx = np.fft.rfftfreq(w)[None, :] * stretch[1]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 2)
    amp[0, 0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    noise = np.fft.irfft2(spec, s=shape)
    return ((noise - noise.mean()) / (noise.std() + 1e-12)).astype(np.float32)


def noise_1d(rng: np.random.Generator, n: int, beta: float, period: int = 1024) -> np.ndarray:
    """A window of n samples from periodic 1D 1/f^beta noise, scaled to [-1, 1]."""
    f = np.fft.rfftfreq(period)
    f[0] = 1.0
    amp = f ** (-beta / 2)
    amp[0] = 0.0
    spec = (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape)) * amp
    line = np.fft.irfft(spec, n=period)[: period // 2]
    line = np.interp(np.linspace(0, len(line) - 1, n), np.arange(len(line)), line)
    return (2 * (line - line.min()) / (np.ptp(line) + 1e-12) - 1).astype(np.float32)


def smooth_1d(line: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of a 1D profile, edges extended."""
    radius = max(1, int(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    padded = np.pad(line, radius, mode="edge")
    return np.convolve(padded, kernel / kernel.sum(), mode="valid")


def upsample(field_: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear resize of a float field to (h, w)."""
    return np.asarray(Image.fromarray(field_.astype(np.float32)).resize((w, h), Image.BILINEAR))


def sample_periodic(field_: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a periodic 2D field at float coordinates."""
    h, w = field_.shape
    r0, c0 = np.floor(rows), np.floor(cols)
    fr, fc = (rows - r0).astype(np.float32), (cols - c0).astype(np.float32)
    r0, c0 = r0.astype(np.int64) % h, c0.astype(np.int64) % w
    r1, c1 = (r0 + 1) % h, (c0 + 1) % w
    top = field_[r0, c0] * (1 - fc) + field_[r0, c1] * fc
    bottom = field_[r1, c0] * (1 - fc) + field_[r1, c1] * fc
    return top * (1 - fr) + bottom * fr


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Periodic Gaussian blur of a square float image through the FFT."""
    if sigma <= 0:
        return img
    f = np.fft.fftfreq(img.shape[0])
    g = np.exp(-2 * (math.pi * sigma) ** 2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(img) * g)).astype(np.float32)
