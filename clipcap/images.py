# Copyright 2026 The ClipCap-HF authors. Licensed under the Apache License, Version 2.0.
"""Image files: found (files, folders, globs), decoded in full and checked, turned into RGB.

`validate_image` is what `prepare_dataset.py` runs on every file: missing, empty, unreadable, non-image, truncated,
too small and too large (a decompression-bomb limit checked before decoding) files get a drop reason; grayscale,
CMYK, transparent, palette and 16-bit images become RGB, EXIF orientation is applied. `load_image` and `find_images`
serve `caption.py`.
"""

from __future__ import annotations

import glob
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _to_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """RGB version of a decoded image, and the conversions it needed."""
    conversions = []
    if image.getexif().get(0x0112, 1) != 1:  # EXIF orientation: turn the pixels as a viewer would show them
        image = ImageOps.exif_transpose(image)
        conversions.append("exif_orientation")
    mode = image.mode
    if mode.startswith("I") or mode == "F":  # 16/32-bit grayscale: scale the full 16-bit range into 8 bits
        pixels = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8), "L").convert("RGB")
        conversions.append("16-bit")
    elif mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba).convert("RGB")
        conversions.append("transparency")
    elif mode == "CMYK":
        image, _ = image.convert("RGB"), conversions.append("cmyk")
    elif mode in ("L", "1"):
        image, _ = image.convert("RGB"), conversions.append("grayscale")
    elif mode != "RGB":
        image, _ = image.convert("RGB"), conversions.append(mode.lower())
    return image, conversions


def validate_image(
    path: str, min_side: int = 32, max_pixels: int = 89_478_485, max_side: int | None = None
) -> tuple[bytes | None, str, list[str]]:
    """Decode one image file in full. Returns (encoded RGB image bytes or None, drop reason or "", conversions).

    The original bytes are kept when nothing had to change; otherwise the image is re-encoded (JPEG quality 95 for
    lossy sources, PNG otherwise).
    """
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return None, "missing", []
    except OSError:
        return None, "unreadable", []
    if size == 0:
        return None, "empty_file", []
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None, "unreadable", []
    return validate_image_bytes(data, min_side, max_pixels, max_side)


def validate_image_bytes(
    data: bytes, min_side: int = 32, max_pixels: int = 89_478_485, max_side: int | None = None
) -> tuple[bytes | None, str, list[str]]:
    """`validate_image` for an image already in memory."""
    saved_bomb_limit, saved_truncated = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
    Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = None, False  # our own limit below; never pad truncation
    try:
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError:
            return None, "not_an_image", []
        except (OSError, SyntaxError, ValueError, EOFError):  # recognised, but the header itself is cut short
            return None, "truncated", []
        width, height = image.size
        if width * height > max_pixels:  # checked from the header, before any pixel is decoded
            return None, "too_large", []
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError):
            return None, "truncated", []
        if min(width, height) < min_side:
            return None, "too_small", []
        source_format = image.format
        rgb, conversions = _to_rgb(image)
        if max_side and max(rgb.size) > max_side:
            rgb = rgb.copy()
            rgb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            conversions.append("resized")
        if not conversions and source_format in ("JPEG", "PNG", "WEBP"):
            return data, "", []
        out = io.BytesIO()
        if source_format in ("JPEG", "WEBP", "MPO"):
            rgb.save(out, format="JPEG", quality=95)
        else:
            rgb.save(out, format="PNG")
        return out.getvalue(), "", conversions
    finally:
        Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved_bomb_limit, saved_truncated


def find_images(inputs: list[str], extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> tuple[list[str], list[str]]:
    """Expand files, folders (recursively, by extension) and glob patterns into image paths, in order, each once.
    Returns (paths, problems): an input that matches nothing is a problem, not an error."""
    extensions = tuple(extension.lower() for extension in extensions)
    paths, problems, seen = [], [], set()

    def add(path: str):
        if path not in seen:
            seen.add(path)
            paths.append(path)

    for item in inputs:
        if os.path.isdir(item):
            found = sorted(
                str(path) for path in Path(item).rglob("*") if path.is_file() and path.suffix.lower() in extensions
            )
            if not found:
                problems.append(f"{item}: no {'/'.join(extensions)} files in this folder")
            for path in found:
                add(path)
        elif os.path.exists(item):
            add(item)  # a file named explicitly is tried whatever its ending
        elif glob.has_magic(item):
            found = sorted(path for path in glob.glob(item, recursive=True) if os.path.isfile(path))
            if not found:
                problems.append(f"{item}: the pattern matches no file")
            for path in found:
                add(path)
        else:
            problems.append(f"{item}: no such file or folder")
    return paths, problems


def load_image(path: str) -> tuple[Image.Image | None, str]:
    """Decode an image in full as RGB; returns (image, "") or (None, the reason it cannot be used)."""
    try:
        if os.path.getsize(path) == 0:
            return None, "empty file"
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB"), ""
    except UnidentifiedImageError:
        return None, "not an image"
    except Image.DecompressionBombError as error:
        return None, f"too large ({error})"
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        return None, f"unreadable ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
