"""Decode one image file into an 8-bit RGB PIL image, or fail with a DataError that says why.

`load_rgb` is a plain module-level function so DataLoader workers can pickle it. It never returns
a half-decoded image: the full decode is forced inside the error handling, and Pillow's
LOAD_TRUNCATED_IMAGES is left off so a truncated file is an error, not grey padding.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.errors import DataError

# Modes that carry an alpha channel; "transparency" in img.info covers P/L/RGB with a tRNS chunk.
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


def load_rgb(path: Path, item: str | None = None, warnings_out: list[dict] | None = None) -> Image.Image:
    """The image at `path` as RGB (EXIF orientation applied), or a DataError naming file, item and reason.

    An image whose pixels decode but whose EXIF block is broken is kept, as stored (unrotated): a record
    {file, item, reason} goes to `warnings_out` (extraction's report), or a RuntimeWarning when None."""
    path = Path(path)
    where = {"file": str(path), "item": item}
    if not path.exists():
        raise DataError("image file not found", **where)
    if not path.is_file():
        raise DataError("image path is not a regular file", **where)
    if path.stat().st_size == 0:
        raise DataError("image file is empty (zero bytes)", **where)

    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a dataset should not
            # decode a 180-megapixel file silently, so the warning counts as the error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()  # force the full decode here, so truncation surfaces now, not in a worker later
                img, exif_problem = _upright(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise DataError(f"image is too large to decode safely (Pillow's decompression-bomb limit "
                        f"is {Image.MAX_IMAGE_PIXELS} pixels): {e}", **where) from None
    except UnidentifiedImageError:
        raise DataError("not a recognised image format (corrupt or not an image)", **where) from None
    except Exception as e:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, ValueError,
        # struct.error, EOFError... on corrupt data; all of them mean "this file cannot be decoded".
        raise DataError(f"corrupt or truncated image ({type(e).__name__}: {e})", **where) from None
    if exif_problem is not None:
        record = DataError(f"broken EXIF block ({exif_problem}): encoded as stored, not rotated", **where).as_record()
        if warnings_out is None:
            warnings.warn(f"file {path}: {record['reason']}", RuntimeWarning, stacklevel=2)
        else:
            warnings_out.append(record)

    try:
        return to_rgb(img)
    except ValueError as e:
        raise DataError(f"cannot convert image mode {img.mode!r} to RGB: {e}", **where) from None


def _upright(img: Image.Image) -> tuple[Image.Image, str | None]:
    """Apply the EXIF orientation tag, so a phone photo taken sideways is encoded as the viewer saw it.
    Returns the image and, for a broken EXIF block, why: metadata damage, not pixel damage, so the pixels
    are kept unrotated rather than an image whose content decoded fine dropped."""
    problem = _exif_header_problem(img.info.get("exif"))
    if problem is not None:   # Pillow would read no tags from it, silently or with a bare warning
        return img.copy(), problem
    try:
        return ImageOps.exif_transpose(img), None
    except Exception as e:  # noqa: BLE001 - any parse failure of the tags themselves
        return img.copy(), f"{type(e).__name__}: {e}"


def _exif_header_problem(raw: bytes | None) -> str | None:
    """Why an EXIF block's TIFF header cannot be read, or None (also when there is no block). The header:
    a byte order (II or MM), the magic 42 and the offset of the first tag directory, which must lie inside."""
    if not raw:
        return None
    data = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw   # JPEG's APP1 prefix; PNG's eXIf has none
    order = {b"II": "little", b"MM": "big"}.get(bytes(data[:2]))
    if order is None:
        return f"byte order {bytes(data[:2])!r} is neither II nor MM"
    if len(data) < 8 or int.from_bytes(data[2:4], order) != 42:
        return "no TIFF header (the magic number 42 is missing)"
    first = int.from_bytes(data[4:8], order)
    if first + 2 > len(data):
        return f"its first tag directory at byte {first} lies past the block's end ({len(data)} bytes)"
    return None


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB."""
    if img.mode == "RGB" and "transparency" not in img.info:
        return img
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        # Composite on white rather than drop alpha: Pillow's plain convert keeps whatever colour
        # sits under transparent pixels (often black or junk), inventing content the image never
        # showed; transparent artwork is almost always drawn for a white page.
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img), img.mode)).convert("RGB")
    return img.convert("RGB")  # L, 1, P, CMYK, YCbCr, RGBX...


def _to_uint8(a: np.ndarray, mode: str) -> np.ndarray:
    """Rescale wide-range grayscale to 0..255. Pillow's own convert clips I;16 at 255, which turns
    almost every 16-bit photo white, so the full 16-bit range is mapped onto 8 bits instead."""
    if mode in _SIXTEEN_BIT_MODES or (mode == "I" and a.min() >= 0 and a.max() <= 65535):
        # 65535 / 255 = 257 exactly: v / 257 rounded maps 0 -> 0 and 65535 -> 255 with no clipping.
        return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    a = a.astype(np.float64)
    if mode == "F" and a.min() >= 0.0 and a.max() <= 1.0:
        return np.rint(a * 255.0).astype(np.uint8)
    # 32-bit integer or float data of no standard range: stretch its own min..max.
    lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)
