"""The `image` task type: decode an image, apply a list of operations,
encode it as PNG, JPEG or WebP."""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from collections.abc import Callable, Mapping
from typing import Any

from PIL import Image, UnidentifiedImageError

from conveyor_server._context import TaskContext
from conveyor_server._handlers import InvalidPayload, TaskHandler

# What a task may decode, and what any step may produce: 4096 x 4096, 64 MiB
# as RGBA. A few hundred KiB of PNG can claim far more than that (a
# decompression bomb), so the header is checked before any pixel is read.
MAX_PIXELS = 4096 * 4096
MAX_SIDE = 16384
MAX_OPERATIONS = 32
# Formats read; anything else is refused before a decoder sees it.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
OUTPUT_FORMATS = ("PNG", "JPEG", "WEBP")
DEFAULT_QUALITY = 85
# What Pillow raises on a malformed or truncated file: its plugins are
# not consistent about it.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)

# A 2 x 2 PNG, red, green, blue and white.
EXAMPLE_IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGP4z8DA8J+BkYHh////DAAe9gT9Ce00PgAAAABJRU5ErkJggg=="
EXAMPLE = {
    "image": EXAMPLE_IMAGE,
    "operations": [
        {"op": "resize", "width": 64, "height": 64},
        {"op": "rotate", "degrees": 90},
        {"op": "grayscale"},
        {"op": "convert", "format": "webp"},
        {"op": "quality", "value": 80},
    ],
}


def _whole(op: Mapping[str, Any], key: str, where: str, low: int, high: int) -> int:
    value = op.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise InvalidPayload(f'{where}: "{key}" must be a whole number', field=f"{where}.{key}")
    if not low <= value <= high:
        raise InvalidPayload(
            f'{where}: "{key}" must be between {low} and {high}, got {int(value)}',
            field=f"{where}.{key}",
        )
    return int(value)


def _size(op: Mapping[str, Any], where: str, both: bool) -> None:
    given = [key for key in ("width", "height") if op.get(key) is not None]
    if (both and len(given) < 2) or not given:
        needs = '"width" and "height"' if both else '"width", "height" or both'
        raise InvalidPayload(f"{where}: give {needs}", field=where)
    sides = [_whole(op, key, where, 1, MAX_SIDE) for key in given]
    if math.prod(sides) > MAX_PIXELS:
        raise InvalidPayload(f"{where}: at most {MAX_PIXELS} pixels", field=where)


def _check_crop(op: Mapping[str, Any], where: str) -> None:
    for key in ("left", "top"):
        _whole(op, key, where, 0, MAX_SIDE)
    for key in ("width", "height"):
        _whole(op, key, where, 1, MAX_SIDE)


def _check_rotate(op: Mapping[str, Any], where: str) -> None:
    degrees = op.get("degrees")
    if isinstance(degrees, bool) or not isinstance(degrees, int | float):
        raise InvalidPayload(f'{where}: "degrees" must be a number', field=f"{where}.degrees")
    if not -360 <= degrees <= 360:
        raise InvalidPayload(
            f'{where}: "degrees" must be between -360 and 360', field=f"{where}.degrees"
        )


def _check_convert(op: Mapping[str, Any], where: str) -> None:
    value = op.get("format")
    if not isinstance(value, str) or value.upper() not in OUTPUT_FORMATS:
        raise InvalidPayload(
            f'{where}: "format" must be png, jpeg or webp, got {value!r}', field=f"{where}.format"
        )


def _check_quality(op: Mapping[str, Any], where: str) -> None:
    _whole(op, "value", where, 1, 100)


# Each operation: its parameters and their check.
OPERATIONS: dict[str, tuple[frozenset[str], Callable[[Mapping[str, Any], str], None]]] = {
    "resize": (frozenset({"width", "height"}), lambda op, where: _size(op, where, both=False)),
    "thumbnail": (frozenset({"width", "height"}), lambda op, where: _size(op, where, both=True)),
    "crop": (frozenset({"left", "top", "width", "height"}), _check_crop),
    "rotate": (frozenset({"degrees"}), _check_rotate),
    "grayscale": (frozenset(), lambda op, where: None),
    "convert": (frozenset({"format"}), _check_convert),
    "quality": (frozenset({"value"}), _check_quality),
}


def _check_operations(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    operations = payload.get("operations", [])
    if not isinstance(operations, list):
        raise InvalidPayload('"operations" must be a list', field="operations")
    if len(operations) > MAX_OPERATIONS:
        raise InvalidPayload(f"at most {MAX_OPERATIONS} operations", field="operations")
    for index, op in enumerate(operations):
        where = f"operations[{index}]"
        if not isinstance(op, Mapping):
            raise InvalidPayload(
                f'{where} must be an object such as {{"op": "grayscale"}}', field=where
            )
        name = op.get("op")
        if name not in OPERATIONS:
            raise InvalidPayload(
                f'{where}: "op" must be one of {", ".join(OPERATIONS)}, got {name!r}',
                field=f"{where}.op",
            )
        params, check = OPERATIONS[name]
        unknown = set(op) - params - {"op"}
        if unknown:
            raise InvalidPayload(
                f"{where}: {name} takes {', '.join(sorted(params)) or 'no parameters'}; "
                f"unknown: {', '.join(sorted(unknown))}",
                field=f"{where}.{sorted(unknown)[0]}",
            )
        check(op, where)
    return list(operations)


def _open(payload: Mapping[str, Any]) -> Image.Image:
    """The image, header read and checked, no pixels decoded yet."""
    unknown = set(payload) - {"image", "operations"}
    if unknown:
        raise InvalidPayload(
            f"image takes image and operations; unknown: {', '.join(sorted(unknown))}",
            field=sorted(unknown)[0],
        )
    text = payload.get("image")
    if not isinstance(text, str) or not text:
        raise InvalidPayload('"image" is required: the image file, base64-encoded', field="image")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidPayload(
            '"image" is not valid base64 (standard alphabet, with padding)', field="image"
        ) from None
    try:
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except Image.DecompressionBombError:
        raise _too_large() from None
    except UnidentifiedImageError:
        raise InvalidPayload(
            f'"image" is not an image in a known format ({", ".join(INPUT_FORMATS)})',
            field="image",
        ) from None
    except DECODE_ERRORS as exc:
        raise InvalidPayload(f'"image" cannot be read: {exc}', field="image") from None
    if image.width * image.height > MAX_PIXELS:
        raise _too_large(image.size)
    return image


def _too_large(size: tuple[int, int] | None = None) -> InvalidPayload:
    claimed = f" ({size[0]} x {size[1]})" if size else ""
    return InvalidPayload(
        f'"image" claims more pixels{claimed} than the {MAX_PIXELS} allowed', field="image"
    )


def validate_image(payload: Mapping[str, Any]) -> None:
    """At submit: base64, a known format and a size within bounds, from the
    header alone; and the operations."""
    _open(payload).close()
    _check_operations(payload)


def _check_size(width: int, height: int, where: str) -> None:
    if width * height > MAX_PIXELS:
        raise InvalidPayload(
            f"{where} would make the image {width} x {height}, more than the "
            f"{MAX_PIXELS} pixels allowed",
            field=where,
        )


def _apply(image: Image.Image, op: Mapping[str, Any], where: str) -> Image.Image:
    name = op["op"]
    if name == "resize":
        # One side given: the other keeps the aspect ratio.
        if op.get("width") is None:
            height = int(op["height"])
            width = max(1, round(image.width * height / image.height))
        elif op.get("height") is None:
            width = int(op["width"])
            height = max(1, round(image.height * width / image.width))
        else:
            width, height = int(op["width"]), int(op["height"])
        _check_size(width, height, where)
        return image.resize((width, height), Image.Resampling.LANCZOS)
    if name == "thumbnail":
        copy = image.copy()
        copy.thumbnail((int(op["width"]), int(op["height"])), Image.Resampling.LANCZOS)
        return copy
    if name == "crop":
        left, top = int(op["left"]), int(op["top"])
        right, bottom = left + int(op["width"]), top + int(op["height"])
        if right > image.width or bottom > image.height:
            raise InvalidPayload(
                f"{where}: the box reaches ({right}, {bottom}), outside the "
                f"{image.width} x {image.height} image",
                field=where,
            )
        return image.crop((left, top, right, bottom))
    if name == "rotate":
        # Checked before rotating: the bounding box of a long, thin image
        # turned 45 degrees is vast.
        angle = math.radians(float(op["degrees"]))
        cos, sin = abs(math.cos(angle)), abs(math.sin(angle))
        _check_size(
            math.ceil(image.width * cos + image.height * sin),
            math.ceil(image.width * sin + image.height * cos),
            where,
        )
        return image.rotate(float(op["degrees"]), Image.Resampling.BICUBIC, expand=True)
    if name == "grayscale":
        return image.convert("LA" if "A" in image.getbands() else "L")
    return image  # convert and quality choose how the result is encoded


def _encode(image: Image.Image, format: str, quality: int) -> bytes:
    if format == "JPEG" and image.mode in ("LA", "RGBA"):
        # JPEG has no alpha: flatten onto white rather than onto black.
        flat = Image.new("RGB", image.size, "white")
        flat.paste(image.convert("RGBA"), mask=image.getchannel("A"))
        image = flat if image.mode == "RGBA" else flat.convert("L")
    out = io.BytesIO()
    options: dict[str, Any] = {"optimize": True} if format == "PNG" else {"quality": quality}
    image.save(out, format=format, **options)
    return out.getvalue()


def transform(ctx: TaskContext, payload: Mapping[str, Any], max_result_bytes: int) -> Any:
    source = _open(payload)
    operations = _check_operations(payload)
    format = source.format if source.format in OUTPUT_FORMATS else "PNG"
    quality = DEFAULT_QUALITY
    try:
        source.load()
    except Image.DecompressionBombError:
        raise _too_large(source.size) from None
    except DECODE_ERRORS as exc:
        raise InvalidPayload(f'"image" cannot be decoded: {exc}', field="image") from None
    image: Image.Image = source
    if image.mode not in ("L", "LA", "RGB", "RGBA"):
        # Palette, CMYK, 16-bit: resampled and encoded the same way everywhere.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    total = len(operations)
    for index, op in enumerate(operations):
        if ctx.cancelled:
            return None
        where = f"operations[{index}]"
        image = _apply(image, op, where)
        if op["op"] == "convert":
            format = str(op["format"]).upper()
        elif op["op"] == "quality":
            quality = int(op["value"])
        ctx.report_progress(
            100.0 * (index + 1) / (total + 1),
            f"{op['op']} ({index + 1} of {total})",
            current=index + 1,
            total=total,
        )
    data = _encode(image, format, quality)
    encoded = base64.b64encode(data).decode("ascii")
    # Leave room for the rest of the result; over the cap the runner would
    # refuse it anyway, with a message that cannot suggest a smaller image.
    if len(encoded) + 1024 > max_result_bytes:
        raise InvalidPayload(
            f"the {format} result is {len(data)} bytes ({len(encoded)} as base64), over the "
            f"result limit of {max_result_bytes} bytes: shrink it with resize or thumbnail, "
            "or use jpeg or webp with a lower quality"
        )
    ctx.report_progress(
        100.0, f"{image.width} x {image.height} {format}", current=total, total=total
    )
    return {
        "image": encoded,
        "format": format,
        "width": image.width,
        "height": image.height,
        "bytes": len(data),
    }


def image_handler(max_result_bytes: int) -> TaskHandler:
    def image(ctx: TaskContext, payload: dict[str, Any]) -> Any:
        """Applies operations to an image (resize, thumbnail, crop, rotate,
        grayscale, convert to png/jpeg/webp, quality) and returns it base64.

        Images over 4096 x 4096 pixels, decompression bombs and unknown
        formats are refused as INVALID_PAYLOAD; progress is reported per
        operation."""
        return transform(ctx, payload, max_result_bytes)

    return image
