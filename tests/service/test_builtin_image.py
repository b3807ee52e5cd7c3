"""The `image` task type on a real server, with images the tests make with
Pillow: each operation, progress per operation, and what is refused."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import pytest
from PIL import Image

from conveyor import Client, InvalidArgument, TaskState
from conveyor_server import TaskContext
from conveyor_server.builtin.image import MAX_PIXELS, transform
from conveyor_server.stores import Progress
from tests.support.server import ServerThread


def _encode(image: Image.Image, format: str = "PNG") -> str:
    out = io.BytesIO()
    image.save(out, format=format)
    return base64.b64encode(out.getvalue()).decode()


def _decode(text: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(text)))


def _picture(width: int = 40, height: int = 20) -> Image.Image:
    """Left half red, right half blue."""
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def _png_header(width: int, height: int) -> str:
    """A PNG that claims width x height pixels in a few bytes: a
    decompression bomb as far as its header goes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(data).decode()


def _run(server: ServerThread, payload: dict[str, Any]) -> dict[str, Any]:
    with Client(server.address) as client:
        task = client.submit("image", payload).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert isinstance(task.result, dict)
    result = dict(task.result)
    image = _decode(result["image"])
    assert (image.width, image.height) == (result["width"], result["height"])
    assert image.format == result["format"]
    assert result["bytes"] == len(base64.b64decode(result["image"]))
    return result


def test_resize_to_both_sides(server: ServerThread) -> None:
    result = _run(
        server,
        {"image": _encode(_picture()), "operations": [{"op": "resize", "width": 10, "height": 30}]},
    )
    assert (result["width"], result["height"], result["format"]) == (10, 30, "PNG")


def test_resize_to_one_side_keeps_the_aspect_ratio(server: ServerThread) -> None:
    result = _run(
        server, {"image": _encode(_picture()), "operations": [{"op": "resize", "width": 20}]}
    )
    assert (result["width"], result["height"]) == (20, 10)


def test_thumbnail_fits_inside_the_box(server: ServerThread) -> None:
    result = _run(
        server,
        {
            "image": _encode(_picture(400, 100)),
            "operations": [{"op": "thumbnail", "width": 100, "height": 100}],
        },
    )
    assert (result["width"], result["height"]) == (100, 25)


def test_crop_keeps_the_box(server: ServerThread) -> None:
    result = _run(
        server,
        {
            "image": _encode(_picture()),
            "operations": [{"op": "crop", "left": 25, "top": 5, "width": 10, "height": 8}],
        },
    )
    image = _decode(result["image"]).convert("RGB")
    assert image.size == (10, 8)
    assert [color for _, color in image.getcolors() or []] == [(0, 0, 255)]


def test_rotate_turns_the_image(server: ServerThread) -> None:
    result = _run(
        server, {"image": _encode(_picture()), "operations": [{"op": "rotate", "degrees": 90}]}
    )
    image = _decode(result["image"]).convert("RGB")
    assert image.size == (20, 40)
    # Counter-clockwise: the left (red) half ends at the bottom.
    assert image.getpixel((10, 35)) == (255, 0, 0)
    assert image.getpixel((10, 5)) == (0, 0, 255)


def test_grayscale_leaves_one_band(server: ServerThread) -> None:
    result = _run(server, {"image": _encode(_picture()), "operations": [{"op": "grayscale"}]})
    assert _decode(result["image"]).mode == "L"


@pytest.mark.parametrize("format", ["png", "jpeg", "webp"])
def test_convert_encodes_in_the_format(server: ServerThread, format: str) -> None:
    result = _run(
        server,
        {"image": _encode(_picture(), "BMP"), "operations": [{"op": "convert", "format": format}]},
    )
    assert result["format"] == format.upper()


def test_a_transparent_image_converts_to_jpeg_on_white(server: ServerThread) -> None:
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    result = _run(
        server, {"image": _encode(image), "operations": [{"op": "convert", "format": "jpeg"}]}
    )
    decoded = _decode(result["image"]).convert("RGB")
    colors = decoded.getcolors()
    assert colors is not None
    assert all(min(color) > 240 for _, color in colors)


def test_quality_trades_bytes_for_fidelity(server: ServerThread) -> None:
    noisy = Image.effect_noise((128, 128), 64).convert("RGB")
    low, high = (
        _run(
            server,
            {
                "image": _encode(noisy),
                "operations": [{"op": "convert", "format": "jpeg"}, {"op": "quality", "value": q}],
            },
        )
        for q in (10, 95)
    )
    assert low["bytes"] < high["bytes"] / 2


def test_progress_is_reported_after_each_operation() -> None:
    reported: list[Progress] = []
    ctx = TaskContext(
        task_id="t",
        type="image",
        attempt=1,
        max_attempts=1,
        labels={},
        on_progress=lambda _, progress: reported.append(progress),
    )
    operations = [
        {"op": "resize", "width": 20},
        {"op": "grayscale"},
        {"op": "rotate", "degrees": 180},
        {"op": "convert", "format": "webp"},
    ]
    transform(ctx, {"image": _encode(_picture()), "operations": operations}, 1 << 20)
    assert [(p.current, p.total, p.message) for p in reported] == [
        (1, 4, "resize (1 of 4)"),
        (2, 4, "grayscale (2 of 4)"),
        (3, 4, "rotate (3 of 4)"),
        (4, 4, "convert (4 of 4)"),
        (4, 4, "20 x 10 WEBP"),
    ]
    assert [p.percent for p in reported] == [20, 40, 60, 80, 100]


def test_the_task_ends_with_full_progress(server: ServerThread) -> None:
    with Client(server.address) as client:
        task = client.submit(
            "image", {"image": _encode(_picture()), "operations": [{"op": "grayscale"}] * 3}
        ).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert (task.progress.percent, task.progress.current, task.progress.total) == (100, 3, 3)


@pytest.mark.parametrize(
    ("payload", "field", "says"),
    [
        ({"image": "not base64!"}, "payload.image", "not valid base64"),
        (
            {"image": base64.b64encode(b"GIF87a? no, plain text").decode()},
            "payload.image",
            "not an image in a known format",
        ),
        (
            {"image": base64.b64encode(b"%PDF-1.4 a document").decode()},
            "payload.image",
            "not an image in a known format",
        ),
        ({"image": _png_header(20000, 10000)}, "payload.image", "claims more pixels"),
        ({"image": _png_header(5000, 5000)}, "payload.image", "claims more pixels (5000 x 5000)"),
        ({"image": None}, "payload.image", '"image" is required'),
        ({"size": 3}, "payload.size", "unknown: size"),
        ({"operations": [{"op": "blur"}]}, "payload.operations[0].op", "must be one of resize"),
        (
            {"operations": [{"op": "resize"}]},
            "payload.operations[0]",
            'give "width", "height" or both',
        ),
        (
            {"operations": [{"op": "resize", "width": 0}]},
            "payload.operations[0].width",
            "between 1 and 16384",
        ),
        (
            {"operations": [{"op": "resize", "width": 9000, "height": 9000}]},
            "payload.operations[0]",
            f"at most {MAX_PIXELS} pixels",
        ),
        (
            {"operations": [{"op": "thumbnail", "width": 10}]},
            "payload.operations[0]",
            'give "width" and "height"',
        ),
        (
            {"operations": [{"op": "crop", "left": 0, "top": 0, "width": 1.5, "height": 1}]},
            "payload.operations[0].width",
            "whole number",
        ),
        (
            {"operations": [{"op": "rotate", "degrees": "90"}]},
            "payload.operations[0].degrees",
            "must be a number",
        ),
        (
            {"operations": [{"op": "convert", "format": "gif"}]},
            "payload.operations[0].format",
            "png, jpeg or webp",
        ),
        (
            {"operations": [{"op": "quality", "value": 101}]},
            "payload.operations[0].value",
            "between 1 and 100",
        ),
        (
            {"operations": [{"op": "grayscale", "amount": 1}]},
            "payload.operations[0].amount",
            "grayscale takes no parameters",
        ),
        ({"operations": "grayscale"}, "payload.operations", "must be a list"),
    ],
)
def test_a_payload_that_cannot_work_is_refused_at_submit(
    server: ServerThread, payload: dict[str, Any], field: str, says: str
) -> None:
    full = {k: v for k, v in {"image": _encode(_picture()), **payload}.items() if v is not None}
    with Client(server.address) as client, pytest.raises(InvalidArgument) as caught:
        client.submit("image", full)
    [(where, description)] = caught.value.field_violations
    assert where == field
    assert says in description


def test_an_operation_that_would_make_a_huge_image_fails_the_task_without_retry(
    server: ServerThread,
) -> None:
    # 4096 x 4 is within bounds; turned 45 degrees its bounding box is not.
    with Client(server.address) as client:
        task = client.submit(
            "image",
            {
                "image": _encode(Image.new("L", (4096, 4))),
                "operations": [
                    {"op": "resize", "width": 4096, "height": 4096},
                    {"op": "rotate", "degrees": 45},
                ],
            },
            max_attempts=3,
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.attempt == 1
    assert task.error is not None
    assert task.error.code == "INVALID_PAYLOAD"
    assert "operations[1] would make the image" in task.error.message


def test_a_crop_outside_the_image_fails_the_task_as_invalid_payload(server: ServerThread) -> None:
    with Client(server.address) as client:
        task = client.submit(
            "image",
            {
                "image": _encode(_picture()),
                "operations": [{"op": "crop", "left": 30, "top": 0, "width": 20, "height": 5}],
            },
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.error is not None
    assert task.error.code == "INVALID_PAYLOAD"
    assert "outside the 40 x 20 image" in task.error.message


def test_a_result_over_the_result_limit_says_how_to_shrink_it(
    make_server: Callable[..., ServerThread],
) -> None:
    server = make_server(max_result_bytes=64 * 1024)
    noisy = Image.effect_noise((200, 200), 100).convert("RGB")
    with Client(server.address) as client:
        task = client.submit(
            "image",
            {"image": _encode(noisy, "JPEG"), "operations": [{"op": "convert", "format": "png"}]},
        ).wait(timeout=20)
    assert task.state is TaskState.FAILED
    assert task.error is not None
    assert task.error.code == "INVALID_PAYLOAD"
    assert "over the result limit of 65536 bytes" in task.error.message


def test_the_type_is_listed_with_an_example_that_runs(server: ServerThread) -> None:
    with Client(server.address) as client:
        [listed] = [t for t in client.task_types() if t.name == "image"]
        assert listed.description.startswith("Applies operations to an image")
        assert listed.example_payload is not None
        task = client.submit("image", listed.example_payload).wait(timeout=20)
    assert task.state is TaskState.SUCCEEDED, task.error
    assert isinstance(task.result, dict)
    assert (task.result["format"], task.result["width"], task.result["height"]) == ("WEBP", 64, 64)
