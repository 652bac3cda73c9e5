from __future__ import annotations

import pytest

from qure_ray.dicom.multipart import MediaType, MultipartLimits, MultipartStream, PartBody, dicom_multipart
from qure_ray.errors import BadRequestError

DICOM = "application/dicom"
LIMITS = MultipartLimits(max_part_bytes=1000, max_request_bytes=100_000, max_parts=5)


def related(*bodies: bytes, close: bool = True) -> bytes:
    body, _ = dicom_multipart(bodies, "XyZ")
    return body if close else body.removesuffix(b"--XyZ--\r\n")


def parse(body: bytes, *, chunk: int = 7, limits: MultipartLimits = LIMITS) -> list[tuple[int, bytes, bool]]:
    stream = MultipartStream(MediaType.parse('multipart/related; type="application/dicom"; boundary=XyZ'), limits)
    parts = []
    for i in range(0, len(body), chunk):
        parts += stream.feed(body[i : i + chunk])
    parts += stream.close()
    return [(p.index, p.read(), p.oversize) for p in parts]


def test_parts_arrive_one_by_one_whatever_the_chunking() -> None:
    body = related(b"first", b"second\r\n--not-a-boundary", b"")
    for chunk in (1, 7, 1000):
        assert parse(body, chunk=chunk) == [
            (0, b"first", False),
            (1, b"second\r\n--not-a-boundary", False),
            (2, b"", False),
        ]


def test_a_body_built_here_parses_back_with_its_own_content_type() -> None:
    body, content_type = dicom_multipart([b"one", b"two"])
    media_type = MediaType.parse(content_type)
    assert media_type.value == "multipart/related" and media_type.params["type"] == "application/dicom"
    stream = MultipartStream(media_type, LIMITS)
    parts = stream.feed(body) + stream.close()
    assert [(part.read(), part.content_type) for part in parts] == [(b"one", DICOM), (b"two", DICOM)]


def test_parts_complete_before_the_body_ends() -> None:
    stream = MultipartStream(MediaType.parse("multipart/related; boundary=XyZ"), LIMITS)
    body = related(b"a" * 50, b"b" * 50)
    first_part_end = body.index(b"--XyZ", 10) + 10
    done = stream.feed(body[:first_part_end])
    assert [p.read() for p in done] == [b"a" * 50]


def test_oversize_part_is_marked_and_others_survive() -> None:
    assert parse(related(b"x" * 1001, b"ok")) == [(0, b"", True), (1, b"ok", False)]


def test_request_limits_and_malformed_bodies() -> None:
    with pytest.raises(BadRequestError) as info:
        parse(related(*[b"p"] * 6))
    assert info.value.http_status == 413 and "5 parts" in str(info.value)
    small = MultipartLimits(max_part_bytes=1000, max_request_bytes=100, max_parts=5)
    with pytest.raises(BadRequestError) as info:
        parse(related(b"y" * 200), limits=small)
    assert info.value.http_status == 413
    with pytest.raises(BadRequestError, match="closing boundary"):
        parse(related(b"z" * 10, close=False))
    with pytest.raises(BadRequestError, match="boundary"):
        MultipartStream(MediaType.parse("multipart/related"), LIMITS)


def test_form_data_part_names() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="a.dcm"\r\n\r\nAAA\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n--XyZ--\r\n'
    )
    stream = MultipartStream(MediaType.parse("multipart/form-data; boundary=XyZ"), LIMITS)
    parts = stream.feed(body) + stream.close()
    assert [(p.name, p.is_file, p.read()) for p in parts] == [("file", True, b"AAA"), ("note", False, b"hello")]


def test_memory_stays_at_a_few_part_sizes_for_a_large_request() -> None:
    """256 MB in 16 MB parts, fed in 1 MB chunks: peak Python memory stays near one spool, not the body."""
    import tracemalloc

    part_bytes, parts, chunk_bytes = 16 * 1024 * 1024, 16, 1024 * 1024
    limits = MultipartLimits(max_part_bytes=part_bytes, max_request_bytes=1 << 40, max_parts=100)
    stream = MultipartStream(MediaType.parse("multipart/related; boundary=XyZ"), limits)
    header = b"--XyZ\r\nContent-Type: application/dicom\r\n\r\n"
    payload = b"\xab" * chunk_bytes
    tracemalloc.start()
    try:
        sizes = []
        for _ in range(parts):
            done = stream.feed(header)
            for _ in range(part_bytes // chunk_bytes):
                done += stream.feed(payload)
            done += stream.feed(b"\r\n")
            for part in done:
                sizes.append(part.size)
                part.close()
        for part in stream.feed(b"--XyZ--\r\n") + stream.close():
            sizes.append(part.size)
            part.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sizes == [part_bytes] * parts
    assert peak < 3 * 8 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB for a {parts * part_bytes / 1e6:.0f} MB body"


def test_a_part_spills_to_a_file_past_its_memory_limit_and_reads_back_whole() -> None:
    body = PartBody(spill_at=10)
    chunk = b"0123456789abcdef"
    body.write(memoryview(chunk)[:6])
    assert not body.on_disk and body.read() == b"012345"
    body.write(memoryview(chunk)[6:12])
    assert body.on_disk and body.read() == b"0123456789ab"
    body.write(memoryview(chunk)[12:])
    assert body.read() == chunk
    body.close()
    assert body.read() == b""


def test_parts_do_not_change_when_the_fed_buffer_does() -> None:
    stream = MultipartStream(MediaType.parse("multipart/related; boundary=XyZ"), LIMITS)
    buffer = bytearray(related(b"payload"))
    parts = stream.feed(buffer)
    buffer[:] = b"x" * len(buffer)
    parts += stream.close()
    assert [p.read() for p in parts] == [b"payload"]


def test_a_boundary_the_parser_cannot_use_is_a_400() -> None:
    with pytest.raises(BadRequestError) as info:
        MultipartStream(MediaType.parse(f"multipart/related; boundary={'b' * 300}"), LIMITS)
    assert info.value.http_status == 400 and "boundary" in str(info.value)
