from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qure_ray.client.cli import main
from qure_ray.dicom.synthetic import chest_dx
from qure_ray.errors import ConfigError
from qure_ray.records import UseCase
from qure_ray.routing import InstanceFacts, Router, load_routing
from qure_ray.routing.quality import blank_reason, unusable_reason

TABLE = load_routing()


def facts(modality: str, body_part: str, view: str, **more: str) -> InstanceFacts:
    return InstanceFacts(modality=modality, body_part=body_part, view_position=view, source="site-a", **more)


@pytest.mark.parametrize(
    ("modality", "body_part", "view", "description", "expected"),
    [
        ("DX", "CHEST", "PA", "", UseCase.QXR),
        ("CR", "chest", "", "", UseCase.QXR),
        ("DX", "", "AP", "", UseCase.QXR),
        ("DX", "", "LL", "", UseCase.QXR),  # routed, then found unusable (lateral)
        ("CR", "", "", "PA Chest erect", UseCase.QXR),
        ("CR", "", "", "Hand left", UseCase.UNSUPPORTED),
        ("DX", "", "PA", "CXR_PA", UseCase.QXR),  # "_" is no word boundary for \b
        ("DX", "", "AP", "AP PORTABLE", UseCase.QXR),
        ("DX", "", "AP", "ABDOMEN SUPINE", UseCase.UNSUPPORTED),  # a frontal view, not of the chest
        ("DX", "", "PA", "HAND PA", UseCase.UNSUPPORTED),
        ("CR", "", "AP", "L-Spine AP", UseCase.UNSUPPORTED),
        ("DX", "", "AP", "AP WHEELCHAIR", UseCase.QXR),  # "heel" inside a word names no body part
        ("DX", "", "AP", "HANDHELD AP", UseCase.QXR),
        ("DX", "", "AP", "HEAD AP", UseCase.UNSUPPORTED),
        ("DX", "", "PA", "RIBS PA", UseCase.UNSUPPORTED),
        ("DX", "", "AP", "UPPER ARM AP", UseCase.UNSUPPORTED),
        ("DX", "", "AP", "AP ARMS RAISED", UseCase.QXR),
        ("DX", "HAND", "PA", "", UseCase.UNSUPPORTED),
        ("CT", "CHEST", "", "", UseCase.UNSUPPORTED),
        ("MR", "", "", "", UseCase.UNSUPPORTED),
        ("CT", "HEAD", "", "", UseCase.QER),
        ("CT", "brain", "", "", UseCase.QER),
    ],
)
def test_shipped_rules(modality: str, body_part: str, view: str, description: str, expected: UseCase) -> None:
    assert TABLE.route(facts(modality, body_part, view, series_description=description)).usecase is expected


def test_unsupported_reason_names_the_tags() -> None:
    reason = TABLE.route(facts("CT", "ABDOMEN", "")).reason
    assert "CT" in reason and "ABDOMEN" in reason and "qxr" in reason and "qer" in reason


def test_a_source_without_the_use_case_is_told_so(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n  - {name: chest, usecase: qxr, match: {modality: [DX]}}\nsources:\n  default: [qxr]\n  site-x: []\n"
    )
    table = load_routing(rules)
    assert table.route(facts("DX", "", "")).usecase is UseCase.QXR
    refused = table.route(InstanceFacts(modality="DX", body_part="", view_position="", source="site-x"))
    assert refused.usecase is UseCase.UNSUPPORTED and "site-x" in refused.reason and "not enabled" in refused.reason


def test_bad_rules_file_names_the_field(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: chest, usecase: qxr, match: {series_description: '(unclosed'}}\n")
    with pytest.raises(ConfigError) as info:
        load_routing(rules)
    assert str(rules) in str(info.value) and "series_description" in str(info.value)
    rules.write_text("rules:\n  - {name: chest, usecase: xray, match: {}}\n")
    with pytest.raises(ConfigError, match="usecase"):
        load_routing(rules)


def test_route_command_prints_the_use_case_and_rule(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "chest.dcm"
    path.write_bytes(chest_dx(size=64))
    assert main(["route", str(path), "--source", "site-a"]) == 0
    assert capsys.readouterr().out.strip() == "qxr\trule chest-radiograph"


def test_usability_of_supported_images() -> None:
    assert unusable_reason(usecase=UseCase.QXR, view_position="PA", rows=512, columns=512) is None
    lateral = unusable_reason(usecase=UseCase.QXR, view_position="LL", rows=512, columns=512)
    assert lateral is not None and "lateral" in lateral
    oblique = unusable_reason(usecase=UseCase.QXR, view_position="RAO", rows=512, columns=512)
    assert oblique is not None and "oblique" in oblique
    tiny = unusable_reason(usecase=UseCase.QXR, view_position="PA", rows=32, columns=512)
    assert tiny is not None and "32x512" in tiny
    assert blank_reason(np.full((8, 8), 0.5, np.float32)) is not None
    assert blank_reason(np.random.default_rng(0).random((8, 8)).astype(np.float32)) is None


def test_a_use_case_without_a_model_is_unsupported_with_the_matched_rule() -> None:
    chest = facts("DX", "CHEST", "PA")
    served = Router(TABLE, frozenset({UseCase.QXR}))
    assert served.route(chest).usecase is UseCase.QXR
    decision = Router(TABLE, frozenset({UseCase.QER})).route(chest)
    assert decision.usecase is UseCase.UNSUPPORTED and decision.rule == "chest-radiograph"
    assert "'qxr'" in decision.reason and "no model deployed" in decision.reason
    assert served.route(facts("CT", "ABDOMEN", "")).reason == TABLE.route(facts("CT", "ABDOMEN", "")).reason


def test_the_shipped_router_serves_both_cards() -> None:
    from qure_ray.paths import SHIPPED_MODELS_DIR
    from qure_ray.routing.rules import SHIPPED_RULES

    assert Router.load(SHIPPED_RULES, SHIPPED_MODELS_DIR).served == {UseCase.QXR, UseCase.QER}
