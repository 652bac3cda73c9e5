"""`qure-ray upload | results` against the real app (in-memory platform) on loopback."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from qure_ray.client import commands
from qure_ray.dicom.synthetic import chest_dx
from tests.unit.client_platform import SOURCE, TOKEN, MemoryPlatform, running_platform, storage_scp


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MemoryPlatform]:
    with running_platform(tmp_path / "platform") as (memory, url):
        for name, value in {"QURE_URL": url, "QURE_TOKEN": TOKEN, "QURE_SOURCE": SOURCE}.items():
            monkeypatch.setenv(name, value)
        yield memory


@pytest.fixture
def study(tmp_path: Path) -> Path:
    folder = tmp_path / "study"
    folder.mkdir()
    for i in range(2):
        (folder / f"{i}.dcm").write_bytes(chest_dx(seed=60 + i, size=64))
    (folder / "notes.txt").write_text("skipped")
    return folder


def test_upload_wait_download_forward_as_json(
    platform: MemoryPlatform, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    with storage_scp() as pacs:
        status = commands.main(
            ["upload", str(study), "--download", str(out), "--forward", f"PACS@127.0.0.1:{pacs.port}", "--json"]
        )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    document = json.loads(captured.out)
    assert document["ok"] is True and document["error"] is None
    assert len(document["uploaded"]) == 2 and [s["path"] for s in document["skipped"]] == [str(study / "notes.txt")]
    assert [r["status"] for r in document["results"]] == ["done", "done"]
    for row in document["results"]:
        assert row["triage_status"] == "Critical" and row["positives"] == ["nodule"]
        assert Path(row["downloaded"]["report_dcm"][0]) == out / row["uid"] / "report_pdf.dcm"
        assert len(row["forwarded"]) == 3
    assert len(pacs.received) == 6
    assert "upload" not in captured.err  # no progress bars with --json


def test_the_table_and_progress_bars_without_json(
    platform: MemoryPlatform, study: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert commands.main(["upload", str(study), "--wait"]) == 0
    captured = capsys.readouterr()
    assert "uploaded 2 file(s) (2 new, 0 already stored), 0 refused, 1 skipped" in captured.out
    header, *rows = [line for line in captured.out.splitlines() if line.strip()][1:]
    assert header.split() == ["UID", "STATUS", "TRIAGE", "POSITIVES", "FILES"]
    assert len(rows) == 2 and all("done" in row and "Critical" in row and "nodule" in row for row in rows)
    assert "upload" in captured.err and "results" in captured.err


def test_failures_exit_non_zero_with_one_line(
    platform: MemoryPlatform, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failing = chest_dx(seed=70, size=64)
    (study / "2.dcm").write_bytes(failing)
    platform.fail.add(str(pydicom.dcmread(study / "2.dcm").SOPInstanceUID))
    assert commands.main(["upload", str(study), "--wait", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is False
    assert captured.err.strip().splitlines()[-1].startswith("error: 1 problem(s); first:")
    assert "crashed three times" in captured.err

    assert commands.main(["upload", str(tmp_path / "nothing-here")]) == 1
    assert "does not exist" in capsys.readouterr().err

    assert commands.main(["upload", str(study), "--token", "wrong"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error:") and "HTTP 401" in last

    assert commands.main(["upload", str(study), "--forward", "nonsense"]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_results_command(platform: MemoryPlatform, study: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["upload", str(study / "0.dcm"), "--json"]) == 0
    sop = json.loads(capsys.readouterr().out)["uploaded"][0]["sop_uid"]
    assert commands.main(["results", sop, "--wait", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["status"] == "done" and document["raw"]["usecase"] == "qxr"
    assert commands.main(["results", sop]) == 0
    assert f"{sop}: done" in capsys.readouterr().out
    assert commands.main(["results", "1.2.3.4"]) == 1
    assert "1.2.3.4" in capsys.readouterr().err


def test_the_commands_plug_into_another_parser() -> None:
    parser = argparse.ArgumentParser(prog="qure-ray")
    subcommands = parser.add_subparsers(dest="command", required=True)
    subcommands.add_parser("serve")
    commands.add_commands(subcommands)
    args = parser.parse_args(["gateway", "--listen", "GW@0.0.0.0:11112", "--spool", "/tmp/s", "--forward", "P@h:104"])
    assert args.command in commands.COMMANDS and args.calling_aes == ""
    assert parser.parse_args(["serve"]).command not in commands.COMMANDS


def test_the_gateway_command_runs_until_sigterm(tmp_path: Path) -> None:
    env = {**os.environ, "QURE_URL": "http://127.0.0.1:9", "QURE_TOKEN": TOKEN, "QURE_SOURCE": SOURCE}
    spool = str(tmp_path / "spool")
    command = [sys.executable, "-m", "qure_ray.client.commands", "gateway", "--listen", "GW@127.0.0.1:0",
               "--spool", spool, "--forward", "PACS@127.0.0.1:9", "--calling-aes", "MOD1"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stderr is not None
        line = ""
        while "listening on" not in line:
            line = process.stderr.readline()
            assert line, "the gateway exited before listening"
        port = int(re.search(r"listening on 127\.0\.0\.1:(\d+)", line).group(1))  # type: ignore[union-attr]
        assert port > 0 and (tmp_path / "spool" / "incoming").is_dir()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def test_a_download_folder_that_cannot_be_written_is_an_error_line_not_a_traceback(
    platform: MemoryPlatform, study: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert commands.main(["upload", str(study), "--download", str(blocked / "out"), "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ok"] is False and "Traceback" not in captured.err
