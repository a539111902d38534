"""Reading the main header of a JPEG 2000 codestream (ISO/IEC 15444-1 Annex A), without decoding.

Why this exists: with ``verification: sampled`` (the default) most lossless codestreams are not
decoded again, so every one of them still gets a check that costs microseconds: the header must
describe exactly the image that was meant to be stored (size, components, precision, sign), use
the reversible 5/3 wavelet (the one that can be lossless), the colour transform that was asked
for, and the stream must be complete (it ends with EOC). This catches the systematic faults that
decoding would catch first (wrong precision or sign, a mixed-up parameter block, a truncated
stream); bit-exactness itself is proven by decoding the first instance of every pixel format of
a series and a random sample (:class:`teachfile.reception.transcode.Verifier`).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

_SOC, _SIZ, _COD, _SOT, _EOC = 0xFF4F, 0xFF51, 0xFF52, 0xFF90, 0xFFD9


@dataclass(frozen=True)
class Header:
    """What the main header says about the image."""

    width: int
    height: int
    #: (precision in bits, signed) per component.
    components: tuple[tuple[int, bool], ...]
    #: Whether every component is at full resolution (no subsampling).
    full_resolution: bool
    #: True for the reversible 5/3 wavelet (COD SPcod transformation 1).
    reversible: bool
    #: Multiple component transformation (COD SGcod) on.
    mct: bool
    complete: bool


class CodestreamError(ValueError):
    """The bytes are not a JPEG 2000 codestream this module can read."""


def read_header(data: bytes) -> Header:
    """Parse SIZ and COD of a raw codestream (J2K, as DICOM encapsulates it; not JP2)."""
    if len(data) < 4 or struct.unpack_from(">H", data, 0)[0] != _SOC:
        raise CodestreamError("no SOC marker")
    pos = 2
    siz: tuple[int, int, tuple[tuple[int, bool], ...], bool] | None = None
    cod: tuple[bool, bool] | None = None
    while pos + 4 <= len(data):
        marker, length = struct.unpack_from(">HH", data, pos)
        if marker == _SOT:
            break
        if marker >> 8 != 0xFF or length < 2 or pos + 2 + length > len(data):
            raise CodestreamError("malformed main header")
        body = data[pos + 4:pos + 2 + length]
        if marker == _SIZ:
            siz = _siz(body)
        elif marker == _COD:
            if len(body) < 10:
                raise CodestreamError("short COD")
            cod = (body[9] == 1, body[4] != 0)
        pos += 2 + length
    if siz is None or cod is None:
        raise CodestreamError("SIZ or COD missing")
    width, height, comps, full = siz
    complete = len(data) >= 2 and struct.unpack_from(">H", data, len(data) - 2)[0] == _EOC
    return Header(width, height, comps, full, cod[0], cod[1], complete)


def _siz(body: bytes) -> tuple[int, int, tuple[tuple[int, bool], ...], bool]:
    if len(body) < 36:
        raise CodestreamError("short SIZ")
    _rsiz, xsiz, ysiz, xo, yo, _xt, _yt, _xto, _yto, csiz = struct.unpack_from(">HIIIIIIIIH",
                                                                               body, 0)
    if len(body) < 36 + 3 * csiz or csiz < 1:
        raise CodestreamError("short SIZ components")
    comps = []
    full = True
    for k in range(csiz):
        ssiz, dx, dy = body[36 + 3 * k:39 + 3 * k]
        comps.append(((ssiz & 0x7F) + 1, bool(ssiz & 0x80)))
        full = full and dx == 1 and dy == 1
    return xsiz - xo, ysiz - yo, tuple(comps), full


def matches(data: bytes, rows: int, columns: int, samples: int, bits_stored: int, signed: bool,
            mct: bool, lossless: bool) -> bool:
    """True when ``data`` is a complete codestream of exactly this image."""
    try:
        h = read_header(data)
    except CodestreamError:
        return False
    return (h.complete and h.full_resolution and (h.width, h.height) == (columns, rows)
            and h.components == ((bits_stored, signed),) * samples
            and h.mct == (mct and samples == 3)
            and (h.reversible or not lossless))
