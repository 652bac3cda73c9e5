"""The cluster configs stay valid and in step with `serve_config.yaml` (docs/deploy.md).

`cluster.yaml` (Ray's cluster launcher on AWS) is checked with the launcher's own code: `prepare_config`
fills in the AWS defaults and `validate_config` checks the result against `ray/autoscaler/ray-schema.json`,
as `ray up` does before it calls AWS. `deploy/kuberay/rayservice.yaml` embeds a Serve config; its application
must equal `serve_config.yaml`'s except for the args in `CLUSTER_ARG_OVERRIDES` and the placement pins in
`PINNED_DEPLOYMENTS`. Nothing here reaches AWS, Kubernetes or a Ray cluster.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from qure_ray.config import CPU_WORKER_SLIVER, SERVE_ENVIRONMENT, Settings

REPO = Path(__file__).resolve().parents[2]
CLUSTER_YAML = REPO / "cluster.yaml"
RAYSERVICE_YAML = REPO / "deploy" / "kuberay" / "rayservice.yaml"
SERVE_CONFIG = REPO / "serve_config.yaml"
DEPLOY_DOC = REPO / "docs" / "deploy.md"

CPU_WORKER_RESOURCE = "qure_cpu_worker"
CLUSTER_ARG_OVERRIDES = frozenset(
    {
        "QURE_DATA_URI",  # s3://bucket/prefix instead of a local folder
        "QURE_CPU_WORKER_RESOURCE",  # the custom resource the CPU workers advertise
        "QURE_MODEL_NUM_GPUS",  # models on GPU workers
        "QURE_INGRESS_MAX_REPLICAS",  # autoscaling within the worker groups' bounds
        "QURE_MODEL_MAX_REPLICAS",
    }
)
"""Serve app args whose cluster value differs from serve_config.yaml's (docs/deploy.md, "Cluster values")."""
PINNED_DEPLOYMENTS = ("CatalogActor", "ImageQueue", "JobManager")
"""Deployments the cluster config places on the CPU workers through Serve's `deployments:` options."""
GPU_INSTANCE_FAMILIES = ("g4dn.", "g5.", "g5g.", "g6.", "g6e.", "p3.", "p4d.", "p4de.", "p5.", "p5e.")
AWS_KEY_PATTERNS = (
    re.compile(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b"),
    re.compile(r"aws_secret_access_key|aws_access_key_id|aws_session_token", re.IGNORECASE),
)


@cache
def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _cluster() -> dict[str, Any]:
    return copy.deepcopy(_yaml(CLUSTER_YAML))


def _node_types() -> dict[str, dict[str, Any]]:
    return _cluster()["available_node_types"]


def _rayservice() -> dict[str, Any]:
    return copy.deepcopy(_yaml(RAYSERVICE_YAML))


def _kuberay_serve_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load(_rayservice()["spec"]["serveConfigV2"])
    return config


def _only_application(config: dict[str, Any], where: str) -> dict[str, Any]:
    applications = config["applications"]
    assert len(applications) == 1, f"{where}: expected the one qure_ray application, got {len(applications)}"
    application: dict[str, Any] = applications[0]
    return application


def _groups() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The head group, the CPU worker group (advertising qure_cpu_worker) and the GPU worker group."""
    cluster = _rayservice()["spec"]["rayClusterConfig"]
    workers = cluster["workerGroupSpecs"]
    cpu = [group for group in workers if CPU_WORKER_RESOURCE in _kuberay_custom_resources(group)]
    gpu = [group for group in workers if _gpu_limit(group) > 0]
    assert len(cpu) == 1, f"rayservice.yaml: one worker group must advertise {CPU_WORKER_RESOURCE}, got {len(cpu)}"
    assert len(gpu) == 1, f"rayservice.yaml: one worker group must have an nvidia.com/gpu limit, got {len(gpu)}"
    assert cpu[0] is not gpu[0], "rayservice.yaml: the CPU and GPU worker groups must differ"
    return cluster["headGroupSpec"], cpu[0], gpu[0]


def _kuberay_custom_resources(group: dict[str, Any]) -> dict[str, float]:
    """rayStartParams `resources`, written as KubeRay expects: a JSON string inside a quoted string."""
    text = group.get("rayStartParams", {}).get("resources")
    if text is None:
        return {}
    resources: dict[str, float] = json.loads(json.loads(text))
    return resources


def _containers(group: dict[str, Any]) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = group["template"]["spec"]["containers"]
    return containers


def _gpu_limit(group: dict[str, Any]) -> int:
    return int(_containers(group)[0].get("resources", {}).get("limits", {}).get("nvidia.com/gpu", 0))


# cluster.yaml: Ray's cluster launcher on AWS


def test_cluster_yaml_passes_the_launchers_own_validation() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(_cluster())  # merges ray/autoscaler/aws/defaults.yaml, as `ray up` does
    validate_config(prepared)  # jsonschema against ray/autoscaler/ray-schema.json, plus the launcher's rules
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"]


def test_head_node_takes_none_of_our_work() -> None:
    cluster = _cluster()
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("CPU") == 0, "the head must advertise 0 CPUs (resources: {CPU: 0})"
    assert CPU_WORKER_RESOURCE not in head["resources"] and not head["resources"].get("GPU")
    start = " ".join(cluster["head_start_ray_commands"])
    assert "--num-cpus=0" in start, "the head's `ray start` must say --num-cpus=0"


def test_cpu_workers_advertise_the_placement_resource_and_no_gpu() -> None:
    cpu = [spec for spec in _node_types().values() if spec["resources"].get(CPU_WORKER_RESOURCE, 0) > 0]
    assert len(cpu) == 1, f"one node type must advertise {CPU_WORKER_RESOURCE}"
    assert not cpu[0]["resources"].get("GPU") and cpu[0].get("min_workers", 0) >= 1


def test_gpu_workers_have_gpus_and_at_least_one_node() -> None:
    gpu = [spec for spec in _node_types().values() if spec["resources"].get("GPU", 0) >= 1]
    assert len(gpu) == 1, "one node type must advertise GPUs (resources: {GPU: n})"
    spec = gpu[0]
    assert spec["node_config"]["InstanceType"].startswith(GPU_INSTANCE_FAMILIES), spec["node_config"]["InstanceType"]
    assert CPU_WORKER_RESOURCE not in spec["resources"], "GPU nodes must not take CPU tasks"
    # build_app refuses QURE_MODEL_NUM_GPUS > 0 while the cluster has no GPU: keep one GPU node up.
    assert 1 <= spec["min_workers"] <= spec["max_workers"]
    assert spec["docker"]["worker_image"].endswith("-gpu"), "GPU nodes need Ray's CUDA image"


def test_every_node_reaches_s3_through_an_instance_profile() -> None:
    for name, spec in _node_types().items():
        profile = spec["node_config"].get("IamInstanceProfile", {})
        assert profile.get("Name") or profile.get("Arn"), f"node type {name}: no IamInstanceProfile"


def test_ray_token_auth_on_every_node_and_one_region() -> None:
    cluster = _cluster()
    assert "~/.ray/auth_token" in cluster["file_mounts"], "every node needs the cluster's Ray token"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cluster[key])
        assert "RAY_AUTH_MODE=token" in start, f"{key}: Ray must start with RAY_AUTH_MODE=token"
        regions = set(re.findall(r"AWS_DEFAULT_REGION=([a-z0-9-]+)", start))
        assert regions == {cluster["provider"]["region"]}, f"{key}: AWS_DEFAULT_REGION {regions} != provider.region"


def test_one_qure_ray_version_for_every_node() -> None:
    commands = " ".join(_cluster()["setup_commands"])
    assert len(re.findall(r"\bQURE_RAY_REF=\S+;", commands)) == 1, "setup_commands: set QURE_RAY_REF once"
    assert "pip install --quiet -e ~/qure_ray" in commands, "install editable, so models/ stays beside the package"


@pytest.mark.parametrize("path", [CLUSTER_YAML, RAYSERVICE_YAML], ids=lambda path: path.name)
def test_no_aws_keys_in_deploy_files(path: Path) -> None:
    text = path.read_text()
    for pattern in AWS_KEY_PATTERNS:
        assert not pattern.search(text), f"{path.name}: {pattern.pattern!r} found; use instance profiles or IRSA"


# deploy/kuberay/rayservice.yaml


def test_rayservice_has_head_cpu_and_gpu_groups() -> None:
    manifest = _rayservice()
    assert manifest["apiVersion"] == "ray.io/v1" and manifest["kind"] == "RayService"
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["authOptions"]["mode"] == "token"
    head, cpu, gpu = _groups()
    assert head["rayStartParams"]["num-cpus"] == "0", "the head pod must start Ray with num-cpus 0"
    assert _kuberay_custom_resources(cpu)[CPU_WORKER_RESOURCE] > 0 and _gpu_limit(cpu) == 0
    assert CPU_WORKER_RESOURCE not in _kuberay_custom_resources(gpu)
    for group in (cpu, gpu):
        assert 1 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], group["groupName"]
    tolerations = gpu["template"]["spec"].get("tolerations", [])
    assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), "GPU pods must tolerate the GPU taint"
    requests = _containers(gpu)[0]["resources"]["requests"]
    assert int(requests["nvidia.com/gpu"]) == _gpu_limit(gpu)


def test_rayservice_never_runs_two_clusters_on_one_catalog() -> None:
    assert _rayservice()["spec"]["upgradeStrategy"]["type"] == "None"


def test_every_pod_gets_tokens_and_the_secrets_key_from_a_secret_and_s3_from_irsa() -> None:
    head, cpu, gpu = _groups()
    images = set()
    for group in (head, cpu, gpu):
        spec = group["template"]["spec"]
        assert spec.get("serviceAccountName") == "qure-ray", "every pod uses the IRSA service account qure-ray"
        container = _containers(group)[0]
        images.add(container["image"])
        env = {item["name"]: item for item in container.get("env", [])}
        for name in ("QURE_TOKENS", "QURE_SECRETS_KEY"):
            item = env.get(name, {})
            assert "value" not in item and item.get("valueFrom", {}).get("secretKeyRef", {}).get("name"), (
                f"{name} must come from a Secret (valueFrom.secretKeyRef) in {group.get('groupName', 'the head group')}"
            )
        ports = {port.get("name"): port["containerPort"] for port in container.get("ports", [])}
        assert ports.get("serve") == _kuberay_serve_config()["http_options"]["port"]
    assert len(images) == 1, f"every pod must run the same qure_ray image, got {sorted(images)}"


def test_worker_readiness_asks_the_ingress_through_the_serve_port() -> None:
    port = _kuberay_serve_config()["http_options"]["port"]
    for group in _groups()[1:]:
        probe = _containers(group)[0]["readinessProbe"]["httpGet"]
        assert probe == {"path": "/health", "port": port}, group["groupName"]


def test_kuberay_serve_config_is_serve_config_yaml_with_the_documented_overrides() -> None:
    from ray.serve.schema import ServeDeploySchema

    local_config, cluster_config = _yaml(SERVE_CONFIG), _kuberay_serve_config()
    ServeDeploySchema.model_validate(local_config)
    ServeDeploySchema.model_validate(cluster_config)
    assert cluster_config["http_options"] == {"host": "0.0.0.0", "port": local_config["http_options"]["port"]}
    local = _only_application(local_config, "serve_config.yaml")
    cluster = _only_application(cluster_config, "rayservice.yaml")
    assert not local.get("deployments"), "serve_config.yaml gained `deployments:`: merge them into rayservice.yaml"
    same_keys = (set(local) | set(cluster)) - {"args", "deployments"}
    differing = {key for key in same_keys if local.get(key) != cluster.get(key)}
    assert not differing, f"rayservice.yaml's application differs from serve_config.yaml's in {sorted(differing)}"
    assert set(cluster["args"]) == set(local["args"]), (
        f"arg names differ: only in serve_config.yaml {sorted(set(local['args']) - set(cluster['args']))}, "
        f"only in rayservice.yaml {sorted(set(cluster['args']) - set(local['args']))}"
    )
    drifted = {
        name: (local["args"][name], cluster["args"][name])
        for name in set(local["args"]) - CLUSTER_ARG_OVERRIDES
        if local["args"][name] != cluster["args"][name]
    }
    assert not drifted, f"args differ beyond CLUSTER_ARG_OVERRIDES (serve_config.yaml, rayservice.yaml): {drifted}"
    not_overridden = {name for name in CLUSTER_ARG_OVERRIDES if local["args"].get(name) == cluster["args"].get(name)}
    assert not not_overridden, f"CLUSTER_ARG_OVERRIDES lists args that do not differ: {sorted(not_overridden)}"


def test_cluster_args_are_valid_settings_that_fit_the_groups() -> None:
    _, cpu, gpu = _groups()
    settings = Settings.load(_only_application(_kuberay_serve_config(), "rayservice.yaml")["args"], {})
    assert settings.data_uri.startswith("s3://")
    assert settings.cpu_worker_resource in _kuberay_custom_resources(cpu)
    assert 0 < settings.model_num_gpus <= _gpu_limit(gpu)
    assert settings.model_num_cpus <= float(_containers(gpu)[0]["resources"]["limits"]["cpu"])
    assert not settings.tokens, "QURE_TOKENS belongs in a Secret, never in the Serve config"
    assert not settings.secrets_key, "QURE_SECRETS_KEY belongs in a Secret, never in the Serve config"


def test_pinned_deployments_keep_the_codes_options_and_add_the_cpu_worker_resource() -> None:
    from qure_ray.pipeline.catalog_actor import CatalogActor
    from qure_ray.pipeline.image_queue import ImageQueue
    from qure_ray.pipeline.job_manager import JobManager

    code = {
        deployment.name: deployment.ray_actor_options or {} for deployment in (CatalogActor, ImageQueue, JobManager)
    }
    pins = _only_application(_kuberay_serve_config(), "rayservice.yaml")["deployments"]
    assert tuple(pin["name"] for pin in pins) == PINNED_DEPLOYMENTS
    for pin in pins:
        assert set(pin) == {"name", "ray_actor_options"}, f"{pin['name']}: pin placement only"
        expected = {**code[pin["name"]], "resources": {CPU_WORKER_RESOURCE: CPU_WORKER_SLIVER}}
        assert pin["ray_actor_options"] == expected, f"{pin['name']}: Serve replaces the code's ray_actor_options"


# docs/deploy.md


def test_the_guides_aws_serve_config_script_writes_a_valid_cluster_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ray.serve.schema import ServeDeploySchema

    scripts = re.findall(r"python - <<'EOF'\n(.*?)\nEOF\n", DEPLOY_DOC.read_text(), flags=re.DOTALL)
    script = next(text for text in scripts if "serve_config.cluster.yaml" in text)
    (tmp_path / "deploy" / "kuberay").mkdir(parents=True)
    shutil.copy(RAYSERVICE_YAML, tmp_path / "deploy" / "kuberay" / "rayservice.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("BUCKET", "my-qure-data")
    exec(compile(script, str(DEPLOY_DOC), "exec"), {})
    config = yaml.safe_load((tmp_path / "serve_config.cluster.yaml").read_text())
    ServeDeploySchema.model_validate(config)
    assert config["proxy_location"] == "HeadOnly" and config["http_options"]["host"] == "127.0.0.1"
    settings = Settings.load(_only_application(config, "serve_config.cluster.yaml")["args"], {})
    assert settings.data_uri == "s3://my-qure-data/qure"
    # ... and it fits cluster.yaml's node types
    node_types = _node_types().values()
    assert any(spec["resources"].get(settings.cpu_worker_resource, 0) > 0 for spec in node_types)
    assert any(0 < settings.model_num_gpus <= spec["resources"].get("GPU", 0) for spec in node_types)


def test_the_operator_guide_lists_every_metric() -> None:
    from qure_ray.metrics import METRICS

    guide = (REPO / "docs" / "deploy.md").read_text()
    assert [name for name in METRICS if f"`ray_{name}`" not in guide] == []


def test_every_node_starts_ray_with_qure_ray_s_serve_environment() -> None:
    cluster = _cluster()
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = " ".join(cluster[key])
        for name, value in SERVE_ENVIRONMENT.items():
            assert f"{name}={value}" in start, f"cluster.yaml {key}: export {name}={value} (qure_ray.config)"
    for group in _groups():
        env = {item["name"]: item.get("value") for item in _containers(group)[0]["env"]}
        for name, value in SERVE_ENVIRONMENT.items():
            assert env.get(name) == value, f"rayservice.yaml: container env {name} must be {value!r}"
