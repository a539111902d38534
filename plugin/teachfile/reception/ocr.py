"""Optional OCR audit: look for text left in stored pixels (off by default).

Why: pixel rules and ultrasound regions only remove text where a layout says it is. An audit
that runs Debian's ``tesseract`` over stored images catches layouts nobody described. It is an
audit, not a gate: OCR misses text and finds "words" in noise, so it must never decide what is
stored. The words it returns may be identifying: show them only to whoever may see the image,
never log them.

Tesseract is not a dependency: :func:`ocr_available` says whether the binary is on PATH, and
:func:`residual_text` raises :class:`OcrUnavailable` when it is not.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
from pydicom.dataset import Dataset

from ..errors import TeachfileError
from .pixels import decode_frames

_WORD_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9:/.,'^-]*")
_MIN_ALNUM = 3


class OcrUnavailable(TeachfileError):
    """The tesseract binary is missing or failed (detail carries no image content)."""


def ocr_available() -> bool:
    """True when the ``tesseract`` binary (Debian package tesseract-ocr) is on PATH."""
    return shutil.which("tesseract") is not None


def residual_text(ds: Dataset, max_frames: int = 3, timeout: float = 60.0) -> list[str]:
    """Words tesseract reads in the first, middle and last frames (sorted, unique).

    Only tokens with at least three letters or digits are kept: shorter ones are mostly
    noise from speckle and calipers. Raises OcrUnavailable or Refusal("pixel-error").
    """
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrUnavailable("tesseract is not installed (Debian package tesseract-ocr)")
    frames, photometric = decode_frames(ds)
    n = frames.shape[0]
    picks = sorted({int(round(i)) for i in np.linspace(0, n - 1, max(1, min(max_frames, n)))})
    words: set[str] = set()
    for i in picks:
        image = _to_gray8(frames[i], photometric)
        words.update(_tesseract(exe, image, timeout))
    return sorted(words)


def _to_gray8(frame: np.ndarray, photometric: str) -> np.ndarray:
    """Dark text on a light background, twice the size: what tesseract reads best."""
    if frame.ndim == 3:
        if photometric == "YBR_FULL":
            gray = frame[..., 0].astype(np.float64)
        else:
            gray = frame.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    else:
        gray = frame.astype(np.float64)
    lo, hi = float(gray.min()), float(gray.max())
    gray = (gray - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(gray)
    if photometric != "MONOCHROME1":
        gray = 255.0 - gray  # ultrasound and most captures have light text on black
    out = np.clip(gray, 0, 255).astype(np.uint8)
    return np.repeat(np.repeat(out, 2, axis=0), 2, axis=1)


def _tesseract(exe: str, image: np.ndarray, timeout: float) -> list[str]:
    rows, cols = image.shape
    pgm = f"P5\n{cols} {rows}\n255\n".encode("ascii") + image.tobytes()
    try:
        done = subprocess.run(  # noqa: S603 - fixed argv, no shell
            [exe, "stdin", "stdout", "--psm", "11", "-l", "eng"],
            input=pgm, capture_output=True, timeout=timeout, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrUnavailable(f"tesseract failed ({type(exc).__name__})") from None
    if done.returncode != 0:
        raise OcrUnavailable(f"tesseract exited with status {done.returncode}")
    text = done.stdout.decode("utf-8", "replace")
    return [w for w in _WORD_RE.findall(text) if sum(c.isalnum() for c in w) >= _MIN_ALNUM]
