"""Bad input at the HTTP edge answers a 4xx that says what was wrong, never a 500, and stores only what was
accepted; error answers carry the headers HTTP asks for. The real app over the in-memory platform."""

from __future__ import annotations

import io
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qure_ray.dicom.synthetic import chest_dx
from tests.unit.client_platform import SOURCE, TOKEN, MemoryPlatform, running_platform

HEADERS = {"Authorization": f"Token {TOKEN}", "Source": SOURCE}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[MemoryPlatform, httpx.Client]]:
    with running_platform(tmp_path) as (platform, base_url), httpx.Client(base_url=base_url, timeout=30) as client:
        yield platform, client


def zip_of(members: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as archive:
        warnings.simplefilter("ignore")  # zipfile warns of a repeated name, and writes it
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def encrypted(archive: bytes, name: str) -> bytes:
    """`archive` with member `name` flagged as encrypted, in its local header and its central directory entry."""
    raw = bytearray(archive)
    with zipfile.ZipFile(io.BytesIO(archive)) as reader:
        raw[reader.getinfo(name).header_offset + 6] |= 0x1
    central = raw.index(b"PK\x01\x02")
    while raw[central + 46 : central + 46 + len(name)] != name.encode():
        central = raw.index(b"PK\x01\x02", central + 1)
    raw[central + 8] |= 0x1
    return bytes(raw)


def test_a_stow_part_that_is_not_dicom_is_refused_alone(served: tuple[MemoryPlatform, httpx.Client]) -> None:
    platform, client = served
    boundary = "b0undary"
    chest = chest_dx(seed=1, size=32)
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + chest + b"\r\n"
        + f"--{boundary}\r\nContent-Type: image/jpeg\r\n\r\n".encode() + b"\xff\xd8\xff not dicom" + b"\r\n"
        + f"--{boundary}--\r\n".encode()
    )  # fmt: skip
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    response = client.post("/studies", content=body, headers={**HEADERS, "Content-Type": content_type})
    assert response.status_code == 202, response.text  # some stored, some failed (PS3.18)
    assert "00081198" in response.json() and len(platform.instances) == 1


def test_an_empty_file_part_is_a_4xx(served: tuple[MemoryPlatform, httpx.Client]) -> None:
    platform, client = served
    response = client.post("/upload", files={"file": ("empty.dcm", b"", "application/dicom")}, headers=HEADERS)
    assert 400 <= response.status_code < 500 and platform.instances == {}


def test_a_zip_with_an_encrypted_member_and_a_repeated_name_answers_each_member(
    served: tuple[MemoryPlatform, httpx.Client],
) -> None:
    platform, client = served
    chests = [chest_dx(seed=2, size=32), chest_dx(seed=3, size=32)]
    archive = encrypted(zip_of([("a.dcm", chests[0]), ("b.dcm", b"secret"), ("a.dcm", chests[1])]), "b.dcm")
    response = client.post("/upload", content=archive, headers={**HEADERS, "Content-Type": "application/zip"})
    assert response.status_code == 200, response.text
    messages = response.json()["messages"]
    assert set(messages) == {"a.dcm", "b.dcm", "a.dcm[1]"}  # the second a.dcm does not hide the first
    assert messages["b.dcm"]["error"]["code"] == "unreadable" and len(platform.instances) == 2


def test_a_zip_zipfile_cannot_open_is_a_400(served: tuple[MemoryPlatform, httpx.Client]) -> None:
    platform, client = served
    archive = bytearray(zip_of([("\u00e9.dcm", chest_dx(seed=4, size=32))]))  # a UTF-8 name, flagged so
    central = archive.index(b"PK\x01\x02")
    name_at = central + 46
    assert archive[name_at : name_at + 2] == "\u00e9".encode()
    archive[name_at] = 0xFF  # no longer UTF-8
    response = client.post("/upload", content=bytes(archive), headers={**HEADERS, "Content-Type": "application/zip"})
    assert response.status_code == 400 and "not a readable zip" in response.json()["message"]
    assert platform.instances == {}


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"[" * 4000, "not JSON"),
        (b'{"url": "http://[::1/"}', "url"),
        (b'{"url": "https://a..b/"}', "url"),
    ],
)
def test_bad_webhook_registrations_are_400(served: tuple[MemoryPlatform, httpx.Client], body: bytes, why: str) -> None:
    _, client = served
    response = client.put("/webhooks", content=body, headers={**HEADERS, "Content-Type": "application/json"})
    assert response.status_code == 400 and why in response.json()["message"]


def test_error_answers_carry_the_headers_http_asks_for(served: tuple[MemoryPlatform, httpx.Client]) -> None:
    _, client = served
    not_allowed = client.delete("/studies/1.2", headers=HEADERS)
    assert not_allowed.status_code == 405 and "POST" in not_allowed.headers["allow"]
    unauthenticated = client.get("/results/1.2.3")
    assert unauthenticated.status_code == 401 and unauthenticated.headers["www-authenticate"].startswith("Token")
    bad_uid = client.get("/studies/1.2/series/1.2.3/instances/abc%0a", headers=HEADERS)
    assert bad_uid.status_code == 400 and "\n" not in bad_uid.json()["message"]
