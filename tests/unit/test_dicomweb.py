"""DICOMweb over the real app and an in-memory platform: WADO-RS retrieve of a study or series, STOW-RS's
RetrieveURL, Accept negotiation, and a STOW-RS request cut short after some instances were stored."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from qure_ray.config import Settings
from qure_ray.dicom.multipart import MediaType, MultipartLimits, MultipartStream, dicom_multipart
from qure_ray.dicom.synthetic import chest_dx
from tests.unit.client_platform import SOURCE, TOKEN, MemoryPlatform, running_platform

HEADERS = {"Authorization": f"Token {TOKEN}", "Source": SOURCE}
STUDY, OTHER_STUDY = "1.2.826.0.1.3680043.10.543.1", "1.2.826.0.1.3680043.10.543.2"
SERIES_A, SERIES_B = f"{STUDY}.1", f"{STUDY}.2"
REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE, RETRIEVE_URL = "00081199", "00081198", "00081190"


def instance(n: int, *, study: str = STUDY, series: str = SERIES_A) -> bytes:
    return chest_dx(seed=n, size=32, study_uid=study, series_uid=series, sop_uid=f"{series}.{n}")


OTHER_SOURCE = {"Authorization": "Token other-site-token", "Source": "other-site"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[MemoryPlatform, httpx.Client]]:
    with running_platform(tmp_path) as (platform, base_url), httpx.Client(base_url=base_url, timeout=30) as client:
        tokens = f"{TOKEN}:{SOURCE},other-site-token:other-site"
        platform.settings = Settings.load({**platform.settings.to_args(), "QURE_TOKENS": tokens}, {})
        yield platform, client


@pytest.fixture
def platform(served: tuple[MemoryPlatform, httpx.Client]) -> MemoryPlatform:
    return served[0]


@pytest.fixture
def client(served: tuple[MemoryPlatform, httpx.Client]) -> httpx.Client:
    return served[1]


def stow(client: httpx.Client, body: bytes, content_type: str, **headers: str) -> tuple[int, dict[str, object]]:
    response = client.post("/studies", content=body, headers={**HEADERS, "Content-Type": content_type, **headers})
    return response.status_code, response.json()


def parts_of(content_type: str, body: bytes) -> list[bytes]:
    limits = MultipartLimits(max_part_bytes=10**8, max_request_bytes=10**9, max_parts=100)
    stream = MultipartStream(MediaType.parse(content_type), limits)
    return [part.read() for part in stream.feed(body) + stream.close()]


def test_a_study_and_a_series_are_retrieved_whole_and_only_by_their_source(
    client: httpx.Client, platform: MemoryPlatform
) -> None:
    sent = [instance(1), instance(2), instance(3, series=SERIES_B)]
    status, reply = stow(client, *dicom_multipart(sent))
    assert status == 200
    study_url = reply[RETRIEVE_URL]["Value"][0]  # type: ignore[index]
    assert study_url.endswith(f"/studies/{STUDY}")

    study = client.get(study_url, headers=HEADERS)
    assert study.status_code == 200 and study.headers["content-type"].startswith(
        'multipart/related; type="application/dicom"'
    )
    assert sorted(parts_of(study.headers["content-type"], study.content)) == sorted(sent)
    series = client.get(
        f"/studies/{STUDY}/series/{SERIES_A}",
        headers={**HEADERS, "Accept": "multipart/related; type=application/dicom"},
    )
    assert sorted(parts_of(series.headers["content-type"], series.content)) == sorted(sent[:2])

    orphan = instance(9, series=SERIES_B)  # stored by an upload that failed before the catalog knew it
    platform.store.put(f"dicom/{SOURCE}/{STUDY}/{SERIES_B}/{SERIES_B}.9.dcm", orphan)
    served = client.get(f"/studies/{STUDY}", headers=HEADERS)
    assert sorted(parts_of(served.headers["content-type"], served.content)) == sorted(sent)  # not the orphan
    assert client.get(f"/studies/{OTHER_STUDY}", headers=HEADERS).status_code == 404
    assert client.get("/studies/1.2.x", headers=HEADERS).status_code == 400
    assert client.get(f"/studies/{STUDY}", headers=OTHER_SOURCE).status_code == 404  # its own token: sees nothing
    refused = client.get(f"/studies/{STUDY}", headers={**HEADERS, "Accept": "application/dicom+json"})
    assert refused.status_code == 406 and "multipart/related" in refused.json()["message"]


def test_stow_names_the_study_only_when_the_request_stored_into_one(client: httpx.Client) -> None:
    status, reply = stow(
        client, *dicom_multipart([instance(4), instance(5, study=OTHER_STUDY, series=f"{OTHER_STUDY}.1")])
    )
    assert status == 200 and RETRIEVE_URL not in reply
    assert len(reply[REFERENCED_SOP_SEQUENCE]["Value"]) == 2  # type: ignore[index]


def test_stow_with_an_accept_it_cannot_answer_is_406_and_stores_nothing(
    client: httpx.Client, platform: MemoryPlatform
) -> None:
    status, reply = stow(client, *dicom_multipart([instance(6)]), Accept="application/dicom+xml")
    assert status == 406 and "Accept" in reply["message"]  # type: ignore[operator]
    assert platform.enqueued == {}
    assert stow(client, *dicom_multipart([instance(6)]), Accept="application/json")[0] == 200


def test_a_request_cut_short_still_reports_what_it_stored(client: httpx.Client, platform: MemoryPlatform) -> None:
    body, content_type = dicom_multipart([instance(7), instance(8)])
    truncated = body[: body.index(instance(8)) + 1000]  # the second instance never arrives whole
    status, reply = stow(client, truncated, content_type)
    assert status == 202
    assert [item["00081155"]["Value"][0] for item in reply[REFERENCED_SOP_SEQUENCE]["Value"]] == [f"{SERIES_A}.7"]  # type: ignore[index]
    assert [item["00081197"]["Value"][0] for item in reply[FAILED_SOP_SEQUENCE]["Value"]] == [0xC000]  # type: ignore[index]
    assert list(platform.enqueued) == [f"{SERIES_A}.7"]

    form = (
        b"--b\r\nContent-Disposition: form-data; name=file; filename=a.dcm\r\nContent-Type: application/dicom\r\n\r\n"
        + instance(9)
        + b"\r\n--b\r\nContent-Disposition: form-data; name=file; filename=b.dcm\r\n\r\n"
        + instance(10)[:500]
    )
    status, reply = stow(client, form, "multipart/form-data; boundary=b")
    assert status == 200 and reply["detailed_info"]["accepted"] == 1  # type: ignore[index]
    assert [r["field"] for r in reply["detailed_info"]["refused"]] == ["(rest of the request)"]  # type: ignore[index]

    nothing_stored = stow(client, truncated[:300], content_type)
    assert nothing_stored[0] == 400 and "ended before its closing boundary" in nothing_stored[1]["message"]  # type: ignore[operator]


def test_urls_handed_out_follow_the_public_url_when_one_is_set(client: httpx.Client, platform: MemoryPlatform) -> None:
    _, reply = stow(client, *dicom_multipart([instance(11)]), Host="127.0.0.1")  # dicomweb-client drops the port
    assert reply[RETRIEVE_URL]["Value"][0] == f"http://127.0.0.1/studies/{STUDY}"  # type: ignore[index]
    platform.settings = Settings.load({**platform.settings.to_args(), "QURE_PUBLIC_URL": "https://ai.example.org/"}, {})
    _, reply = stow(client, *dicom_multipart([instance(12)]), Host="127.0.0.1")
    assert reply[RETRIEVE_URL]["Value"][0] == f"https://ai.example.org/studies/{STUDY}"  # type: ignore[index]
    referenced = reply[REFERENCED_SOP_SEQUENCE]["Value"][0][RETRIEVE_URL]["Value"][0]  # type: ignore[index]
    assert referenced == f"https://ai.example.org/studies/{STUDY}/series/{SERIES_A}/instances/{SERIES_A}.12"
