"""deploy/k8s: valid against the Kubernetes schemas, and consistent with batchd's settings."""

from __future__ import annotations

import importlib.util
import os
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from batchd.settings import Settings
from tests.deploy.conftest import DOCKERFILE, K8S, ROOT, env_setting
from tests.test_settings import setting_names

#: The oldest Kubernetes the manifests support, and the newest the package knows.
VERSIONS = ("1.28.0", kubernetes_validate.latest_version())


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((K8S / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def kustomization() -> dict[str, Any]:
    return load("kustomization.yaml")


def generated_configmap() -> dict[str, Any]:
    """The ConfigMap kustomize's configMapGenerator makes (without its name hash)."""
    [gen] = kustomization()["configMapGenerator"]
    data = {Path(f).name: (K8S / f).read_text(encoding="utf-8") for f in gen["files"]}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
            "data": data}  # fmt: skip


def deployment() -> dict[str, Any]:
    return load("deployment.yaml")


def container() -> dict[str, Any]:
    [c] = deployment()["spec"]["template"]["spec"]["containers"]
    assert isinstance(c, dict)
    return c


def cluster_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: Path) -> Settings:
    """`toml` loaded as in a pod, the secret files it names replaced by readable stand-ins."""
    for name in list(os.environ):
        if name.startswith("BATCHD_"):
            monkeypatch.delenv(name)
    key, secret = tmp_path / "key", tmp_path / "whsec"
    key.write_text("sk-ant-test-key\n")
    secret.write_text("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\n")
    monkeypatch.setenv("BATCHD_ACCOUNTS__DEFAULT__API_KEY_FILE", str(key))
    monkeypatch.setenv("BATCHD_WEBHOOKS__SECRET_FILE", str(secret))
    return Settings.load(toml)


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_schemas(version: str) -> None:
    """Every resource kustomize builds, and the Secret example, validate strictly."""
    resources = [load(name) for name in kustomization()["resources"]]
    resources += [generated_configmap(), load("secret.example.yaml")]
    assert {r["kind"] for r in resources} >= {
        "Deployment", "Service", "PodDisruptionBudget", "ConfigMap", "Secret"
    }  # fmt: skip
    for resource in resources:
        kubernetes_validate.validate(resource, version, strict=True)


def test_schema_check_catches_a_typo() -> None:
    """The validation is real: a misspelt field is refused."""
    broken = deployment()
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProb"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


def test_servicemonitor_selects_the_metrics_port() -> None:
    """The ServiceMonitor (an operator CRD, not in the schemas) scrapes the Service's port."""
    monitor, service = load("servicemonitor.yaml"), load("service.yaml")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["kind"] == "ServiceMonitor"
    labels = monitor["spec"]["selector"]["matchLabels"]
    assert labels.items() <= service["metadata"]["labels"].items()
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"


def test_configmap_is_the_example_with_cluster_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """batchd.toml loads to the example's settings but for the overrides render_config lists."""
    spec = importlib.util.spec_from_file_location("render_config", K8S / "render_config.py")
    assert spec is not None and spec.loader is not None
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    cluster = cluster_settings(tmp_path, monkeypatch, K8S / "batchd.toml")
    example = cluster_settings(tmp_path, monkeypatch, ROOT / "config.example.toml")
    raw = tomllib.loads((K8S / "batchd.toml").read_text(encoding="utf-8"))
    changed = set()
    for table, key, value in render.OVERRIDES:
        section = raw
        for part in filter(None, table.split(".")):
            section = section[part]
        assert section[key] == tomllib.loads(f"v = {value}")["v"], (table, key)
        changed.add(table.split(".")[0] if table else key)
    got, want = cluster.model_dump(mode="json"), example.model_dump(mode="json")
    for name in set(want) - changed:
        assert got[name] == want[name], f"{name} differs: run `make k8s-config`"
    fresh = tmp_path / "fresh.toml"
    fresh.write_text(render.render((ROOT / "config.example.toml").read_text(encoding="utf-8")))
    assert cluster_settings(tmp_path, monkeypatch, fresh).model_dump(mode="json") == got


def test_deployment_fits_the_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Grace period beyond run.grace; port, probes and mounts as batchd.toml expects."""
    settings = cluster_settings(tmp_path, monkeypatch, K8S / "batchd.toml")
    pod = deployment()["spec"]["template"]["spec"]
    c = container()
    assert settings.run.grace < pod["terminationGracePeriodSeconds"] <= settings.run.grace + 30
    [port] = c["ports"]
    assert port["containerPort"] == settings.http.port and settings.http.host == "0.0.0.0"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port["name"]}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port["name"]}
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    env = {e["name"]: e for e in c["env"]}
    assert env["BATCHD_CONFIG"]["value"] == f"{mounts['config']}/batchd.toml"
    raw = tomllib.loads((K8S / "batchd.toml").read_text(encoding="utf-8"))
    files = {raw["accounts"]["default"]["api_key_file"], raw["webhooks"]["secret_file"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    items = {f"{mounts['secrets']}/{i['path']}" for i in volumes["secrets"]["secret"]["items"]}
    assert files == items
    assert mounts["tmp"] == "/tmp"  # the multiprocess metrics files; the root fs is read-only
    known = set(setting_names(Settings)) | {"config"}
    assert all(env_setting(name) in known for name in env)


def test_deployment_is_locked_down_and_sized() -> None:
    """Several replicas, non-root, read-only root filesystem, requests and a memory limit."""
    d = deployment()
    pod = d["spec"]["template"]["spec"]
    c = container()
    assert d["spec"]["replicas"] >= 2
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    res = c["resources"]
    assert {"cpu", "memory"} <= set(res["requests"])
    assert _mebibytes(res["limits"]["memory"]) > _mebibytes(res["requests"]["memory"]) >= 300
    uid = pod["securityContext"]["runAsUser"]
    assert f"USER {uid}:" in DOCKERFILE.read_text(encoding="utf-8")
    assert c["args"] == ["run"]


def test_names_agree_across_resources() -> None:
    """Selectors, the ConfigMap and the Secret keys the Deployment uses all exist."""
    d, service, pdb = deployment(), load("service.yaml"), load("poddisruptionbudget.yaml")
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert volumes["config"]["configMap"]["name"] == generated_configmap()["metadata"]["name"]
    secret = load("secret.example.yaml")
    assert volumes["secrets"]["secret"]["secretName"] == secret["metadata"]["name"]
    used = {i["key"] for i in volumes["secrets"]["secret"]["items"]}
    used |= {e["valueFrom"]["secretKeyRef"]["key"] for e in container()["env"] if "valueFrom" in e}
    assert used <= set(secret["stringData"])
    for name in kustomization()["resources"]:
        assert (K8S / name).is_file()


def _mebibytes(quantity: str) -> float:
    units = {"Mi": 1.0, "Gi": 1024.0}
    return float(quantity[:-2]) * units[quantity[-2:]]
