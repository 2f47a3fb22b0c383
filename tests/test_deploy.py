"""The Kubernetes manifests in deploy/ parse and agree with the contract and the CLI."""
import re
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="pyyaml is in the dev extra")

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def _docs():
    docs = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


def test_triton_deployment_ports_probes_and_image():
    docs = _docs()
    dep = docs[("Deployment", "adgen-triton")]
    container = dep["spec"]["template"]["spec"]["containers"][0]
    # Triton 2.51 = NGC release 24.10, matching tritonclient==2.51.0.
    assert container["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert "--model-repository=/models" in container["args"]
    for probe in ("readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/v2/health/ready"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    svc = docs[("Service", "adgen-triton")]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert {p["port"] for p in svc["spec"]["ports"]} == {8000, 8001, 8002}


def test_hpa_scales_the_deployment_on_queue_time():
    docs = _docs()
    hpa = docs[("HorizontalPodAutoscaler", "adgen-triton")]
    assert hpa["spec"]["scaleTargetRef"]["name"] == "adgen-triton"
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = docs[("ConfigMap", "adgen-prometheus-adapter-rules")]["data"]["config.yaml"]
    assert metric in rules and "nv_inference_queue_duration_us" in rules
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_indexed_job_shards_cover_every_index():
    job = _docs()[("Job", "adgen-generate")]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    args = container["args"]
    assert args[0] == "generate"
    shard = args[args.index("--shard") + 1]
    m = re.fullmatch(r"\$\(JOB_COMPLETION_INDEX\)/(\d+)", shard)
    assert m and int(m.group(1)) == spec["completions"]
    # Each shard writes its own output folder, so no two pods share a manifest.
    out = args[args.index("-o") + 1]
    assert "$(JOB_COMPLETION_INDEX)" in out
    assert args[args.index("--url") + 1] == "adgen-triton:8001"
    env = {e["name"] for e in container.get("env", [])}
    assert "JOB_COMPLETION_INDEX" in env
