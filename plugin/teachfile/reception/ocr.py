"""Optional OCR: the audit of stored pixels, and the reception gate for unruled captures.

Why: pixel rules and ultrasound regions only remove text where a layout says it is. An audit
that runs Debian's ``tesseract`` over stored images catches layouts nobody described. It is an
audit, not a gate: OCR misses text and finds "words" in noise, so it must never decide what is
stored. The words it returns may be identifying: show them only to whoever may see the image,
never log them.

The reception gate (:func:`gate_words`, used only when the pixel rules enable ``ocr_gate``)
turns the audit's caution around: it may only ever *refuse*. An image that no rule cleans is
stored only when OCR finds nothing in any frame under several views (inverted grey, and the
near-white and near-black pixels alone, where overlay text lives; for colour, the coloured pixels
alone); any token of three letters or digits refuses it. OCR still misses text (tiny or
handwritten-looking glyphs, text in low contrast over anatomy): the README states that risk.

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


#: Margin around every view: tesseract misses text that touches the image's edge.
_GATE_PAD = 32


def gate_views(frame: np.ndarray, photometric: str) -> list[np.ndarray]:
    """The images the gate hands tesseract for one frame (dark on light, twice the size)."""
    if frame.ndim == 3:
        rgb = frame.astype(np.float64)
        gray = rgb[..., 0] if photometric == "YBR_FULL" else rgb @ np.array([0.299, 0.587, 0.114])
    else:
        rgb = None
        gray = frame.astype(np.float64)
    if photometric == "MONOCHROME1":
        gray = gray.max() - gray
    lo, hi = float(gray.min()), float(gray.max())
    norm = (gray - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(gray)
    views = [255.0 - norm, np.where(norm >= 250.0, 0.0, 255.0), np.where(norm <= 5.0, 0.0, 255.0)]
    if rgb is not None and photometric == "RGB":
        spread = rgb.max(axis=-1) - rgb.min(axis=-1)
        views.append(np.where(spread > spread.max() * 0.25 if spread.max() > 32 else
                              np.zeros_like(spread, dtype=bool), 0.0, 255.0))
    out = []
    for v in views:
        img = np.clip(v, 0, 255).astype(np.uint8)
        img = np.repeat(np.repeat(img, 2, axis=0), 2, axis=1)
        out.append(np.pad(img, _GATE_PAD, constant_values=255))
    return out


def gate_words(ds: Dataset, timeout: float = 60.0) -> list[str]:
    """Every word tesseract reads in any frame of ``ds`` under any gate view (sorted, unique).

    Raises OcrUnavailable (no tesseract, or it failed) or Refusal("pixel-error"): the caller
    refuses the instance then, as it does when words are found."""
    exe = shutil.which("tesseract")
    if exe is None:
        raise OcrUnavailable("tesseract is not installed (Debian package tesseract-ocr)")
    frames, photometric = decode_frames(ds)
    words: set[str] = set()
    for frame in frames:
        for view in gate_views(frame, photometric):
            words.update(_tesseract(exe, view, timeout))
    return sorted(words)
