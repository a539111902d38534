"""Decoding encapsulated frames with imagecodecs, shared by pixel cleaning and transcoding.

Both need it where pydicom has no decoder plugin; both need the same care: a codec returns the
sample bits it stored, so values are masked to Bits Stored and sign-extended per Pixel
Representation before they become the dataset's dtype.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames


def imagecodecs_frames(ds: Dataset, codec: str) -> list[np.ndarray]:
    """Every frame of ``ds`` decoded with imagecodecs' ``<codec>_decode``."""
    import imagecodecs

    decode = getattr(imagecodecs, f"{codec}_decode")
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    alloc, stored = int(ds.BitsAllocated), int(ds.BitsStored)
    signed = int(ds.PixelRepresentation) == 1
    dtype = np.dtype(f"{'i' if signed else 'u'}{alloc // 8}")
    out = []
    for data in generate_frames(ds.PixelData, number_of_frames=nframes):
        arr = np.asarray(decode(data)).astype(np.int64) & ((1 << stored) - 1)
        if signed:
            arr = np.where(arr >= 1 << (stored - 1), arr - (1 << stored), arr)
        out.append(arr.astype(dtype))
    return out
