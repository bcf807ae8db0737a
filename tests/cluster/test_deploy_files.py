"""The Kubernetes files keep what a drain without dropped calls needs (docs/scaling.md)."""

from __future__ import annotations

import yaml

from bot.config import Settings
from tests.cluster.conftest import ROOT

K8S = ROOT / "deploy" / "k8s"


def load(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def test_the_deployment_drains_for_exotels_hour_and_probes_the_right_endpoints():
    (deployment,) = load("deployment.yaml")
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    (bot,) = pod["containers"]
    env = {e["name"]: e for e in bot["env"]}
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["terminationGracePeriodSeconds"] == 3900
    assert bot["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert bot["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert bot["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pre_stop = int(bot["lifecycle"]["preStop"]["exec"]["command"][1])
    drain = float(env["SHUTDOWN_DRAIN_SECS"]["value"])
    assert pre_stop + drain + 15 < pod["terminationGracePeriodSeconds"]  # 15: the goodbye
    assert drain >= 3600  # Exotel's stream cap
    assert env["BOT_STATE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "exotel-bot-redis"
    assert "exec python -m bot serve" in bot["args"][-1]  # SIGTERM reaches Python, not sh
    for name in env:
        assert name.lower() in Settings.model_fields, name


def test_the_redis_secret_and_the_hpa_match_the_deployment():
    secret = next(d for d in load("redis.yaml") if d["kind"] == "Secret")
    assert secret["metadata"]["name"] == "exotel-bot-redis"
    assert secret["stringData"]["url"].startswith("redis://")
    (hpa,) = load("hpa.yaml")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] == "exotel_active_calls"
    rules = yaml.safe_load((K8S / "prometheus-adapter-rules.yaml").read_text())
    assert rules["rules"]["custom"][0]["name"]["as"] == "exotel_active_calls"
    kustomized = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert sorted(kustomized) == ["deployment.yaml", "hpa.yaml", "redis.yaml", "service.yaml"]
