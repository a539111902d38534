"""Synthetic CT stacks for the portal's tests and benchmark: every slice differs (a disc whose
radius follows the slice), values in Hounsfield units through a rescale, so that scrolling and
windowing visibly change the picture."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, generate_uid


def ct_stack(n: int, size: int = 128, seed: str = "portal", description: str = "CT stack",
             patient: str = "PORTAL^TEST") -> list[pydicom.Dataset]:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study = generate_uid(entropy_srcs=[seed, "study"])
    series = generate_uid(entropy_srcs=[seed, "series"])
    yy, xx = np.mgrid[0:size, 0:size]
    r2 = (yy - size / 2) ** 2 + (xx - size / 2) ** 2
    # Noise as a scanner makes it (about 15 HU), so compressed sizes and decode times are those
    # of a real CT rather than of flat areas.
    rng = np.random.default_rng(int(hashlib.sha256(seed.encode()).hexdigest()[:8], 16))
    out = []
    for i in range(n):
        ds = copy.deepcopy(base)
        ds.PatientName = patient
        # Not the seed itself: the profile scrubs the patient ID out of descriptions.
        ds.PatientID = "P" + hashlib.sha256(seed.encode()).hexdigest()[:12]
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "instance", str(i)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.StudyDescription = description
        ds.SeriesDescription = "axial"
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [0, 0, float(i) * 2.5]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceLocation = float(i) * 2.5
        ds.Rows = ds.Columns = size
        ds.PixelSpacing = [0.7, 0.7]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
        radius = size * (0.15 + 0.3 * (i + 1) / n)
        hu = np.full((size, size), -1000, dtype=np.int16)  # air
        hu[r2 < (size * 0.48) ** 2] = -700  # lung-like
        hu[r2 < radius ** 2] = 60  # soft tissue
        hu[(r2 < (radius * 0.3) ** 2)] = 900  # bone
        hu[: size // 8, (i * 7) % size] = 400  # a marker moving with the slice
        noisy = hu + rng.normal(0, 15, hu.shape).round().astype(np.int16)
        ds.PixelData = (noisy + 1024).astype(np.int16).tobytes()
        for tag in ("LargestImagePixelValue", "SmallestImagePixelValue"):
            if tag in ds:
                del ds[tag]
        out.append(ds)
    return out


def colour_image(seed: str = "colour", size: int = 96) -> pydicom.Dataset:
    """A true-colour endoscopy frame (VL Endoscopic Image, no capture modality): red, green and
    blue bands, so a viewer that drops colour shows grey."""
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds = copy.deepcopy(base)
    for tag in list(ds.keys()):
        if ds[tag].keyword in ("RescaleIntercept", "RescaleSlope", "WindowCenter", "WindowWidth",
                               "LargestImagePixelValue", "SmallestImagePixelValue"):
            del ds[tag]
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.1"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.Modality = "ES"
    ds.PatientID = "P" + hashlib.sha256(seed.encode()).hexdigest()[:12]
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[seed, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[seed, "series"])
    ds.SOPInstanceUID = generate_uid(entropy_srcs=[seed, "instance"])
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.StudyDescription = "Colour case"
    ds.BurnedInAnnotation = "NO"
    ds.Rows = ds.Columns = size
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rgb = np.zeros((size, size, 3), dtype=np.uint8)
    third = size // 3
    rgb[:third, :, 0] = 220
    rgb[third:2 * third, :, 1] = 200
    rgb[2 * third:, :, 2] = 230
    ds.PixelData = rgb.tobytes()
    return ds
