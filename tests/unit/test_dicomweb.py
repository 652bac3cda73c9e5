"""DICOMweb over the real app and an in-memory platform: WADO-RS retrieve of a study or series, their metadata and an
instance's frames (with dicomweb-client as the peer), STOW-RS's RetrieveURL, Accept negotiation, and a STOW-RS
request cut short after some instances were stored."""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pydicom.encaps
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, RLELossless

from qure_ray.api import uploads
from qure_ray.config import Settings
from qure_ray.dicom.multipart import MediaType, MultipartLimits, MultipartStream, dicom_multipart
from qure_ray.dicom.pixels import Windowing, displayed
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import StorageError
from qure_ray.models.phantoms import head_ct_multiframe
from tests.unit.client_platform import SOURCE, TOKEN, MemoryPlatform, running_platform

HEADERS = {"Authorization": f"Token {TOKEN}", "Source": SOURCE}
STUDY, OTHER_STUDY = "1.2.826.0.1.3680043.10.543.1", "1.2.826.0.1.3680043.10.543.2"
SERIES_A, SERIES_B = f"{STUDY}.1", f"{STUDY}.2"
REFERENCED_SOP_SEQUENCE, FAILED_SOP_SEQUENCE, RETRIEVE_URL = "00081199", "00081198", "00081190"


def instance(n: int, *, study: str = STUDY, series: str = SERIES_A) -> bytes:
    return chest_dx(seed=n, size=32, study_uid=study, series_uid=series, sop_uid=f"{series}.{n}")


OTHER_SOURCE = {"Authorization": "Token other-site-token", "Source": "other-site"}


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[MemoryPlatform, str]]:
    with running_platform(tmp_path) as (platform, base_url):
        tokens = f"{TOKEN}:{SOURCE},other-site-token:other-site"
        platform.settings = Settings.load({**platform.settings.to_args(), "QURE_TOKENS": tokens}, {})
        yield platform, base_url


@pytest.fixture
def base_url(running: tuple[MemoryPlatform, str]) -> str:
    return running[1]


@pytest.fixture
def served(running: tuple[MemoryPlatform, str]) -> Iterator[tuple[MemoryPlatform, httpx.Client]]:
    with httpx.Client(base_url=running[1], timeout=30) as client:
        yield running[0], client


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


# --- frames and metadata (WADO-RS) ---------------------------------------------------------------------------


def multiframe(syntax: str) -> bytes:
    """A 3-frame legacy-converted head CT in `syntax`: native as highdicom writes it, RLE, or big endian."""
    original = head_ct_multiframe(seed=1, findings=set(), slices=3, size=32)
    if syntax == ExplicitVRLittleEndian:
        return original
    dataset = pydicom.dcmread(io.BytesIO(original))
    buffer = io.BytesIO()
    if syntax == RLELossless:
        dataset.compress(RLELossless)
        dataset.save_as(buffer, enforce_file_format=True)
    else:  # big endian, where pydicom writes Pixel Data's bytes as they are: swap them
        values = dataset.pixel_array
        dataset.PixelData = values.astype(values.dtype.newbyteorder(">")).tobytes()
        dataset.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        pydicom.dcmwrite(buffer, dataset, implicit_vr=False, little_endian=False, force_encoding=True)
    return buffer.getvalue()


def dicomweb(base_url: str) -> DICOMwebClient:
    return DICOMwebClient(url=base_url, headers=HEADERS)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian, RLELossless])
def test_frames_come_as_stored_or_decoded_to_native_as_accept_asks(
    served: tuple[MemoryPlatform, httpx.Client], base_url: str, syntax: str
) -> None:
    data = multiframe(syntax)
    stored = pydicom.dcmread(io.BytesIO(data))
    assert stow(served[1], *dicom_multipart([data]))[0] == 200
    uids = {"study_instance_uid": stored.StudyInstanceUID, "series_instance_uid": stored.SeriesInstanceUID,
            "sop_instance_uid": stored.SOPInstanceUID}  # fmt: skip
    peer = dicomweb(base_url)

    def native(index: int) -> bytes:
        values = stored.pixel_array[index]
        return values.astype(values.dtype.newbyteorder("<")).tobytes()

    as_stored = peer.retrieve_instance_frames(**uids, frame_numbers=[3, 1])  # its default: type="*/*"
    if syntax == RLELossless:  # the codestreams, untouched
        assert as_stored == [pydicom.encaps.get_frame(stored.PixelData, i, number_of_frames=3) for i in (2, 0)]
    else:
        assert as_stored == [native(2), native(0)]
    decoded = peer.retrieve_instance_frames(
        **uids, frame_numbers=[2], media_types=(("application/octet-stream", ExplicitVRLittleEndian),)
    )
    assert decoded == [native(1)]

    url = f"/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}/instances/{stored.SOPInstanceUID}"
    answer = served[1].get(f"{url}/frames/1", headers={**HEADERS, "Accept": "multipart/related; type=image/jp2"})
    assert answer.status_code == 406 and "does not admit" in answer.json()["message"]
    if syntax == RLELossless:
        assert "image/dicom-rle" in answer.json()["message"]  # what it could have sent
        sent_as = served[1].get(
            f"{url}/frames/1", headers={**HEADERS, "Accept": 'multipart/related; type="image/dicom-rle"'}
        )
        assert sent_as.status_code == 200 and 'type="image/dicom-rle"' in sent_as.headers["content-type"]
        assert f"transfer-syntax={RLELossless}".encode() in sent_as.content  # each part says what it holds


def test_a_frame_list_names_frames_the_instance_has(served: tuple[MemoryPlatform, httpx.Client]) -> None:
    client = served[1]
    data = multiframe(ExplicitVRLittleEndian)
    stored = pydicom.dcmread(io.BytesIO(data))
    assert stow(client, *dicom_multipart([data]))[0] == 200
    url = f"/studies/{stored.StudyInstanceUID}/series/{stored.SeriesInstanceUID}/instances/{stored.SOPInstanceUID}"
    for frames, status, said in (("4", 404, "has 3 frame(s)"), ("0", 400, "from 1"), ("1,x", 400, "'x'"),
                                 ("2,1,2", 400, "repeated: [2]")):  # fmt: skip
        answer = client.get(f"{url}/frames/{frames}", headers=HEADERS)
        assert (answer.status_code, said in answer.json()["message"]) == (status, True), frames
    assert client.get(f"{url}/frames/1", headers=OTHER_SOURCE).status_code == 404
    assert client.get(f"{url}/frames/1", headers={**HEADERS, "Source": "x"}).status_code == 403


def test_metadata_is_the_data_set_with_pixel_data_as_a_bulk_data_url_of_its_frames(
    served: tuple[MemoryPlatform, httpx.Client], base_url: str
) -> None:
    platform, client = served
    data = multiframe(RLELossless)
    stored = pydicom.dcmread(io.BytesIO(data))
    sent = [data, instance(21), instance(22, series=SERIES_B)]
    assert stow(client, *dicom_multipart([data]))[0] == 200 and stow(client, *dicom_multipart(sent[1:]))[0] == 200
    peer = dicomweb(base_url)

    described = peer.retrieve_instance_metadata(
        stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPInstanceUID
    )
    pixels = described.pop("7FE00010")
    assert pydicom.Dataset.from_json(described) == pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert pixels["vr"] == "OB" and pixels["BulkDataURI"].endswith(
        f"/instances/{stored.SOPInstanceUID}/bulkdata/7FE00010"
    )
    bulk_url = httpx.URL(pixels["BulkDataURI"]).path  # the peer's Host has no port
    bulk = client.get(bulk_url, headers=HEADERS)
    assert bulk.status_code == 200 and bulk.content.count(b"Content-Type: image/dicom-rle") == 3  # every frame
    not_bulk = client.get(bulk_url.replace("7FE00010", "00100010"), headers=HEADERS)  # PatientName: inline
    assert not_bulk.status_code == 404 and "no bulk data element 00100010" in not_bulk.json()["message"]
    assert client.get(bulk_url.replace("7FE00010", "7FE0001"), headers=HEADERS).status_code == 400

    series = peer.retrieve_series_metadata(STUDY, SERIES_A)
    assert [item["00080018"]["Value"] for item in series] == [[f"{SERIES_A}.21"]]
    platform.store.put(f"dicom/{SOURCE}/{STUDY}/{SERIES_B}/{SERIES_B}.9.dcm", instance(9, series=SERIES_B))  # orphan
    study = peer.retrieve_study_metadata(STUDY)
    assert sorted(item["00080018"]["Value"][0] for item in study) == [f"{SERIES_A}.21", f"{SERIES_B}.22"]
    assert all(item["7FE00010"]["vr"] == "OW" for item in study)  # native 16-bit radiographs
    refused = client.get(f"/studies/{STUDY}/metadata", headers={**HEADERS, "Accept": "application/dicom"})
    assert refused.status_code == 406 and "application/dicom+json" in refused.json()["message"]
    assert client.get(f"/studies/{STUDY}/metadata", headers=OTHER_SOURCE).status_code == 404


def test_parts_of_one_request_are_ingested_together_and_answered_in_their_order(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PACS pushes a series in one STOW-RS request: its parts are ingested up to PARTS_IN_FLIGHT at once (not
    one after another), and the reply lists them in the request's order though the first finishes last."""
    in_flight, peak = 0, 0
    real_ingest = uploads.ingest

    async def slow_first(platform: object, *, field: str, **kwargs: object) -> object:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            if field == "part0":
                await asyncio.sleep(0.5)  # the others start meanwhile
            return await real_ingest(platform, field=field, **kwargs)  # type: ignore[arg-type]
        finally:
            in_flight -= 1

    monkeypatch.setattr(uploads, "ingest", slow_first)
    sent = [instance(n) for n in range(30, 38)]
    status, reply = stow(client, *dicom_multipart(sent))
    assert status == 200 and peak == uploads.PARTS_IN_FLIGHT > 1
    referenced = [item["00081155"]["Value"][0] for item in reply[REFERENCED_SOP_SEQUENCE]["Value"]]  # type: ignore[index]
    assert referenced == [f"{SERIES_A}.{n}" for n in range(30, 38)]


def test_parts_of_one_uid_in_one_request_are_stored_in_its_order(
    client: httpx.Client, platform: MemoryPlatform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As when parts went one at a time: the first content of a UID is stored, the second is a conflict, even
    when the first one's store is the slower."""
    first = instance(40)
    second = chest_dx(seed=41, size=32, study_uid=STUDY, series_uid=SERIES_A, sop_uid=f"{SERIES_A}.40")
    real_put = platform.store.put_unless_changed

    def slow_first(key: str, data: bytes, **kwargs: object) -> object:
        if data == first:
            time.sleep(0.3)
        return real_put(key, data, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(platform.store, "put_unless_changed", slow_first)
    status, reply = stow(client, *dicom_multipart([first, second]))
    assert status == 202  # one stored, one refused
    (stored,) = reply[REFERENCED_SOP_SEQUENCE]["Value"]  # type: ignore[index]
    assert stored["00081155"]["Value"] == [f"{SERIES_A}.40"]
    assert platform.store.get(platform.instances[f"{SERIES_A}.40"].object_key) == first


def test_a_storage_failure_stops_reading_the_request(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    real_ingest, seen = uploads.ingest, []

    async def failing_second(platform: object, *, field: str, **kwargs: object) -> object:
        seen.append(field)
        if field == "part1":
            raise StorageError("the store is down")
        await asyncio.sleep(0.05)
        return await real_ingest(platform, field=field, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(uploads, "ingest", failing_second)
    status, reply = stow(client, *dicom_multipart([instance(n) for n in range(50, 70)]))
    assert status == 503 and "storage" in reply["message"]  # type: ignore[operator]
    assert len(seen) <= uploads.PARTS_IN_FLIGHT + 2  # not the 20 parts


def test_a_frame_is_rendered_for_a_peer_as_jpeg_or_png(
    served: tuple[MemoryPlatform, httpx.Client], base_url: str
) -> None:
    data = multiframe(RLELossless)
    stored = pydicom.dcmread(io.BytesIO(data))
    assert stow(served[1], *dicom_multipart([data]))[0] == 200
    uids = (stored.StudyInstanceUID, stored.SeriesInstanceUID, stored.SOPInstanceUID)
    peer = dicomweb(base_url)
    png = peer.retrieve_instance_frames_rendered(*uids, frame_numbers=[2], media_types=("image/png",),
                                                 params={"window": "40,80"})  # fmt: skip
    brain = displayed(stored, windowing=Windowing("fixed", 39.5, 79), frame=1)  # PS3.3's LINEAR window 40/80
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.round(brain * 255).astype(np.uint8))
    jpeg = Image.open(io.BytesIO(peer.retrieve_instance_rendered(*uids, params={"viewport": "16,16"})))
    assert (jpeg.format, jpeg.size) == ("JPEG", (16, 16))  # frame 1, by default JPEG
    url = "/studies/{}/series/{}/instances/{}/frames/{}/rendered".format(*uids, "1,2")
    assert served[1].get(url, headers=HEADERS).status_code == 400  # one frame per picture
    assert served[1].get(url.replace("1,2", "9"), headers=HEADERS).status_code == 404
