from __future__ import annotations

from pathlib import Path

import pytest

from qure_ray.config import CallingAE, Settings, TokenTable, parse_calling_aes
from qure_ray.errors import ConfigError


def test_defaults_match_the_design() -> None:
    settings = Settings.load({}, {})
    assert settings.data_uri == "./.qure" and settings.http_host == "127.0.0.1" and settings.http_port == 8000
    assert settings.aws_endpoint_url is None and not settings.tokens
    assert (settings.models_path / "qxr-densenet" / "model.yaml").is_file()


def test_args_win_over_env_in_either_spelling() -> None:
    env = {"QURE_DATA_URI": "s3://env-bucket/p", "QURE_HTTP_PORT": "9000", "AWS_ENDPOINT_URL": "http://127.0.0.1:8333"}
    settings = Settings.load({"data_uri": "/data", "QURE_HTTP_PORT": 9100}, env)
    assert settings.data_uri == "/data" and settings.http_port == 9100
    assert settings.aws_endpoint_url == "http://127.0.0.1:8333"


def test_round_trip_through_serve_args() -> None:
    settings = Settings.load({"QURE_TOKENS": "secret-token-1:site-a", "QURE_MODEL_NUM_GPUS": "0.5"}, {})
    assert Settings.load(settings.to_args(), {}) == settings


@pytest.mark.parametrize(
    ("args", "named", "shown"),
    [
        ({"QURE_HTTP_PORT": "eighty"}, "QURE_HTTP_PORT", "'eighty'"),
        ({"QURE_HTTP_PORT": 70000}, "QURE_HTTP_PORT", "1..65535"),
        ({"QURE_DATA_URI": "s3://Bad_Bucket/x"}, "QURE_DATA_URI", "Bad_Bucket"),
        ({"QURE_DATA_URI": "gs://bucket"}, "QURE_DATA_URI", "s3://bucket/prefix"),
        ({"AWS_ENDPOINT_URL": "localhost:8333"}, "AWS_ENDPOINT_URL", "http"),
        ({"QURE_TOKENS": "no-source-here"}, "QURE_TOKENS", "token:source"),
        ({"QURE_MODEL_NUM_GPUS": "-1"}, "QURE_MODEL_NUM_GPUS", ">= 0"),
        ({"QURE_NOT_A_SETTING": "1"}, "QURE_NOT_A_SETTING", "allowed"),
        ({"QURE_WEBHOOK_ALLOWED_NETWORKS": "10.0.0.0/8,lan"}, "QURE_WEBHOOK_ALLOWED_NETWORKS", "'lan'"),
    ],
)
def test_bad_values_name_the_setting_value_and_rule(args: dict[str, object], named: str, shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.load(args, {})
    assert named in str(info.value) and shown in str(info.value)


def test_tokens_are_never_in_the_repr() -> None:
    settings = Settings.load({"QURE_TOKENS": "very-secret-token:site-a"}, {})
    assert "very-secret-token" not in repr(settings)
    assert TokenTable.parse("very-secret-token:site-a").source_of("very-secret-token") == "site-a"


def test_dev_token_is_made_once_and_kept(tmp_path: Path) -> None:
    first, created = Settings.load({}, {}).with_dev_token(tmp_path)
    assert created and (tmp_path / "dev-token").read_text().strip() == created
    assert first.tokens.source_of(created) == "dev"
    second, created_again = Settings.load({}, {}).with_dev_token(tmp_path)
    assert created_again is None and second.tokens == first.tokens
    configured, none = Settings.load({"QURE_TOKENS": "given-token-1:site-a"}, {}).with_dev_token(tmp_path)
    assert none is None and configured.tokens.source_of("given-token-1") == "site-a"


def test_dimse_settings_are_checked() -> None:
    aes = "CT01:site-a, MR02:site-b@10.20.0.0/24, MR02:site-b@fd00::7"
    settings = Settings.load({"QURE_DIMSE_PORT": 11112, "QURE_DIMSE_CALLING_AES": aes}, {})
    callers = parse_calling_aes(settings.dimse_calling_aes)
    assert {title: caller.source for title, caller in callers.items()} == {"CT01": "site-a", "MR02": "site-b"}
    assert callers["CT01"].allows("192.0.2.1")  # no network listed: any
    peers = ("10.20.0.9", "::ffff:10.20.0.9", "fd00::7", "10.20.1.9", "fd00::8")
    assert [callers["MR02"].allows(peer) for peer in peers] == [True, True, True, False, False]
    assert not callers["MR02"].allows("not an address")
    assert parse_calling_aes("CT01:site-a,CT01:site-a") == {"CT01": CallingAE("site-a")}  # the same entry twice
    assert Settings.load({}, {}).dimse_port == 0
    with pytest.raises(ConfigError, match="QURE_DIMSE_CALLING_AES"):
        Settings.load({"QURE_DIMSE_PORT": 11112}, {})
    for bad, why in (
        ("WAY_TOO_LONG_AE_TITLE_X:site-a", "AE:source"),
        ("CT01:site-a@", "AE:source@network"),
        ("CT01:site-a@10.20.0.0/33", "not a network"),
        ("CT01:site-a,CT01:site-b", "listed more than once"),
        ("CT01:site-a@10.0.0.1,CT01:site-a", "listed more than once"),  # one entry would open the other to all
        ("CT01:site-a,CT01:site-a@10.0.0.1", "listed more than once"),
        ("CT01:site-a@::ffff:10.0.0.0/120", "write an IPv4 network as IPv4"),  # it would match no peer
    ):
        with pytest.raises(ConfigError, match=why):
            Settings.load({"QURE_DIMSE_PORT": 11112, "QURE_DIMSE_CALLING_AES": bad}, {})


def test_the_secrets_key_is_checked_and_kept_locally_only_for_local_data(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="QURE_SECRETS_KEY: key 1 has 5 characters"):
        Settings.load({"QURE_SECRETS_KEY": "short"}, {})
    with pytest.raises(ConfigError, match="key 2 has 3 characters"):
        Settings.load({"QURE_SECRETS_KEY": "n" * 32 + ",old"}, {})
    local = Settings.load({"QURE_DATA_URI": str(tmp_path / "data")}, {}).with_local_secrets_key(tmp_path)
    assert len(local.secrets_key) >= 32 and local.secrets_key not in repr(local)
    assert (tmp_path / "data" / "secrets-key").stat().st_mode & 0o777 == 0o600  # beside the data it seals
    again = Settings.load({"QURE_DATA_URI": str(tmp_path / "data")}, {}).with_local_secrets_key(tmp_path / "elsewhere")
    assert again.secrets_key == local.secrets_key  # whatever the working directory
    (tmp_path / "old-state").mkdir()
    (tmp_path / "old-state" / "secrets-key").write_text("k" * 40 + "\n")  # made before keys moved to the data
    other_data = Settings.load({"QURE_DATA_URI": str(tmp_path / "other-data")}, {})
    moved = other_data.with_local_secrets_key(tmp_path / "old-state")
    assert moved.secrets_key == "k" * 40 and (tmp_path / "other-data" / "secrets-key").read_text().strip() == "k" * 40
    on_s3 = Settings.load({"QURE_DATA_URI": "s3://bucket/p"}, {}).with_local_secrets_key(tmp_path / "other")
    assert not on_s3.secret_sealer.enabled and not (tmp_path / "other").exists()
    given = Settings.load({"QURE_SECRETS_KEY": "g" * 40}, {}).with_local_secrets_key(tmp_path)
    assert given.secrets_key == "g" * 40


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [
        ("QURE_CATALOG_FLUSH_INTERVAL_S", "inf", "finite"),  # the committer would never flush
        ("QURE_SERIES_QUIET_PERIOD_S", "nan", "finite"),
        ("QURE_MAX_PARTS", 1.9, "an integer"),  # not silently 1
        ("QURE_MODEL_MAX_BATCH_SIZE", 2000, "over the limit of 1024"),  # the card's own limit, named here
        ("QURE_MODEL_BATCH_WAIT_TIMEOUT_S", 30, "over the limit of 10"),
        ("QURE_DIMSE_AE_TITLE", "A" * 17, "not an AE title"),
        ("QURE_DIMSE_AE_TITLE", "A\\B", "not an AE title"),
        ("QURE_DIMSE_HOST", "", "not a host name"),  # would bind every interface
        ("QURE_HTTP_HOST", "host:80", "not a host name"),
        ("QURE_URL_SECRET", "short", "at least 32"),
        ("QURE_SECRETS_KEY", ",", "holds no key"),
    ],
)
def test_nonsense_settings_are_refused_naming_the_setting(setting: str, value: object, why: str) -> None:
    with pytest.raises(ConfigError, match=why) as refused:
        Settings.load({setting: value}, {})
    assert str(refused.value).startswith(setting)


def test_an_autoscaling_maximum_below_the_fixed_count_is_refused_and_ipv6_hosts_make_urls() -> None:
    with pytest.raises(ConfigError, match="QURE_MODEL_MAX_REPLICAS: 1 is below QURE_MODEL_REPLICAS"):
        Settings.load({"QURE_MODEL_REPLICAS": 2, "QURE_MODEL_MAX_REPLICAS": 1}, {})
    assert Settings.load({"QURE_MODEL_REPLICAS": 2, "QURE_MODEL_MAX_REPLICAS": 0}, {}).model_max_replicas == 0
    assert Settings.load({"QURE_HTTP_HOST": "::1"}, {}).results_base_url == "http://[::1]:8000"


@pytest.mark.timeout(60)  # a hang guard: the old expression would have taken hours on this name
def test_a_long_host_that_is_not_one_is_refused_not_backtracked_for_hours() -> None:
    """A regular expression with nested optional parts doubled its time with each character."""
    with pytest.raises(ConfigError, match="QURE_HTTP_HOST"):
        Settings.load({"QURE_HTTP_HOST": "qure-ray-ingress-headless-service-name-in-k8s!"}, {})


def test_an_app_arg_in_a_spelling_that_is_not_read_is_refused() -> None:
    """`Data_Uri` passed the unknown-setting check (case-insensitive) but was never read: data went to ./.qure."""
    with pytest.raises(ConfigError, match=r"unknown setting.*Data_Uri"):
        Settings.load({"Data_Uri": "/srv/qure"}, {})
    assert {Settings.load({key: "/srv/qure"}, {}).data_uri for key in ("data_uri", "QURE_DATA_URI")} == {"/srv/qure"}
