"""Captured images for the OCR gate's tests: a CT slice saved by a workstation as a Secondary
Capture, with or without text burned into its pixels.

No font library is needed: text is drawn from a 5x7 bitmap font, scaled up, in the spirit of
the block letters of a modality's overlay."""

from __future__ import annotations

import copy

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"

_GLYPHS = {
    "A": [" ### ", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "D": ["#### ", "#   #", "#   #", "#   #", "#   #", "#   #", "#### "],
    "E": ["#####", "#    ", "#    ", "#### ", "#    ", "#    ", "#####"],
    "H": ["#   #", "#   #", "#   #", "#####", "#   #", "#   #", "#   #"],
    "I": [" ### ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "J": ["  ###", "   # ", "   # ", "   # ", "   # ", "#  # ", " ##  "],
    "M": ["#   #", "## ##", "# # #", "# # #", "#   #", "#   #", "#   #"],
    "N": ["#   #", "##  #", "# # #", "#  ##", "#   #", "#   #", "#   #"],
    "O": [" ### ", "#   #", "#   #", "#   #", "#   #", "#   #", " ### "],
    "R": ["#### ", "#   #", "#   #", "#### ", "# #  ", "#  # ", "#   #"],
    "S": [" ####", "#    ", "#    ", " ### ", "    #", "    #", "#### "],
    "T": ["#####", "  #  ", "  #  ", "  #  ", "  #  ", "  #  ", "  #  "],
    "0": [" ### ", "#   #", "#  ##", "# # #", "##  #", "#   #", " ### "],
    "1": ["  #  ", " ##  ", "  #  ", "  #  ", "  #  ", "  #  ", " ### "],
    "2": [" ### ", "#   #", "    #", "   # ", "  #  ", " #   ", "#####"],
    "3": ["#####", "   # ", "  #  ", "   # ", "    #", "#   #", " ### "],
    "4": ["   # ", "  ## ", " # # ", "#  # ", "#####", "   # ", "   # "],
    "5": ["#####", "#    ", "#### ", "    #", "    #", "#   #", " ### "],
    "6": ["  ## ", " #   ", "#    ", "#### ", "#   #", "#   #", " ### "],
    "7": ["#####", "    #", "   # ", "  #  ", " #   ", " #   ", " #   "],
    "8": [" ### ", "#   #", "#   #", " ### ", "#   #", "#   #", " ### "],
    " ": ["     "] * 7,
}


def draw_text(image: np.ndarray, text: str, x: int, y: int, scale: int,
              value: int | tuple[int, ...]) -> np.ndarray:
    """``text`` drawn into ``image`` (in place) with its top left corner at (x, y)."""
    for ch in text:
        for r, row in enumerate(_GLYPHS[ch]):
            for c, ink in enumerate(row):
                if ink == "#":
                    image[y + r * scale:y + (r + 1) * scale,
                          x + c * scale:x + (c + 1) * scale] = value
        x += 6 * scale
    return image


def ct_pixels(size: int = 512) -> np.ndarray:
    """CT_small's slice windowed to 8 bits and scaled to ``size`` x ``size``."""
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm")).pixel_array.astype(np.float64)
    gray = np.clip((ct - ct.min()) / (ct.max() - ct.min()) * 255, 0, 255).astype(np.uint8)
    factor = size // gray.shape[0]
    return np.repeat(np.repeat(gray, factor, axis=0), factor, axis=1)


def secondary_capture(pixels: np.ndarray, name: str = "capture") -> Dataset:
    """A workstation's Secondary Capture of ``pixels`` (grey or RGB, 8 bits), with a patient's
    header, as the seed's viewer saves it "as a new series"."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[name, "sop"])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[name, "series"])
    ds.PatientName = "PHIQCAPTURE^JOHN"
    ds.PatientID = "PHIQCAP123"
    ds.StudyDate = "20240105"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.SeriesDescription = "Key images"
    ds.InstanceNumber = 1
    rgb = pixels.ndim == 3
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(pixels.shape[0]), int(pixels.shape[1])
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def captures() -> dict[str, Dataset]:
    """Clean and texted captures: a name banner in a corner, an ID over the anatomy, a colour
    (yellow) annotation on an RGB capture."""
    base = ct_pixels()
    rgb = np.repeat(base[..., np.newaxis], 3, axis=2)
    out = {
        "clean-grey": secondary_capture(base, "clean-grey"),
        "clean-rgb": secondary_capture(rgb.copy(), "clean-rgb"),
        "banner": secondary_capture(draw_text(base.copy(), "DOE JOHN 12345678", 10, 10, 3, 255),
                                    "banner"),
        "over-anatomy": secondary_capture(draw_text(base.copy(), "SMITH", 150, 300, 3, 255),
                                          "over-anatomy"),
        "yellow-rgb": secondary_capture(
            draw_text(rgb.copy(), "JANE ROE 2024", 40, 460, 2, (255, 255, 0)), "yellow-rgb"),
    }
    return {k: copy.deepcopy(v) for k, v in out.items()}
