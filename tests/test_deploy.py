"""The Kubernetes manifests in deploy/ parse and agree with the client, the server launcher
and the CLI they drive."""
import dataclasses
import importlib.metadata
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


def _triton_container(docs):
    return docs[("Deployment", "adgen-triton")]["spec"]["template"]["spec"]["containers"][0]


def ngc_release(triton_version: str) -> str:
    """NGC's monthly tritonserver image for a Triton 2.x release: 2.51 -> 24.10 (one minor
    version a month since 2.39 = 23.10)."""
    months = int(triton_version.split(".")[1]) - 39 + 23 * 12 + 10
    return f"{(months - 1) // 12}.{(months - 1) % 12 + 1:02d}"


def test_ngc_release_of_a_triton_version():
    assert ngc_release("2.39.0") == "23.10" and ngc_release("2.41.0") == "23.12"
    assert ngc_release("2.42.0") == "24.01"


def test_triton_image_is_the_release_of_the_installed_client():
    image = _triton_container(_docs())["image"]
    client = importlib.metadata.version("tritonclient")
    assert image == f"nvcr.io/nvidia/tritonserver:{ngc_release(client)}-py3", client


def test_triton_ports_and_probes_are_what_adgen_serves_and_waits_on():
    from adgen.serving.jobs.triton_server import ServerConfig
    docs = _docs()
    container = _triton_container(docs)
    defaults = {f.name: f.default for f in dataclasses.fields(ServerConfig)}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {k: defaults[f"{k}_port"] for k in ("http", "grpc", "metrics")}
    assert "--model-repository=/models" in container["args"]
    for probe in ("readinessProbe", "startupProbe"):
        check = container[probe]["httpGet"]
        assert check["path"] == "/v2/health/ready"  # what TritonServer.wait_ready polls
        assert check["port"] in (ports["http"], "http")
    assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
    svc = docs[("Service", "adgen-triton")]
    dep = docs[("Deployment", "adgen-triton")]
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert {p["port"] for p in svc["spec"]["ports"]} == set(ports.values())


def test_hpa_scales_the_deployment_on_queue_time():
    docs = _docs()
    hpa = docs[("HorizontalPodAutoscaler", "adgen-triton")]
    assert (hpa["spec"]["scaleTargetRef"]["kind"], hpa["spec"]["scaleTargetRef"]["name"]) in docs
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    rules = docs[("ConfigMap", "adgen-prometheus-adapter-rules")]["data"]["config.yaml"]
    assert metric in rules and "nv_inference_queue_duration_us" in rules
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_indexed_job_runs_a_valid_generate_per_shard_against_the_service():
    """Every pod's args, with its index filled in, are an `adgen generate` command line the
    CLI accepts; the shards cover every index once, each writes its own folder, and the
    --url is the Triton Service's gRPC port."""
    from adgen.cli import cli
    from adgen.cli.generate import parse_shard
    docs = _docs()
    spec = docs[("Job", "adgen-generate")]["spec"]
    assert spec["completionMode"] == "Indexed"
    container = spec["template"]["spec"]["containers"][0]
    assert "JOB_COMPLETION_INDEX" in {e["name"] for e in container.get("env", [])}
    outs, shards = set(), set()
    for index in range(spec["completions"]):
        args = [re.sub(r"\$\(JOB_COMPLETION_INDEX\)", str(index), a) for a in container["args"]]
        ctx = cli.make_context("adgen", list(args))
        sub = cli.get_command(ctx, args[0])
        params = sub.make_context(args[0], args[1:]).params
        shards.add(parse_shard(params["shard"]))
        outs.add(params["out"])
    assert shards == {(i, spec["completions"]) for i in range(spec["completions"])}
    assert len(outs) == spec["completions"]  # no two pods share a manifest
    url = container["args"][container["args"].index("--url") + 1]
    svc = docs[("Service", "adgen-triton")]
    grpc = {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"]
    assert url == f"{svc['metadata']['name']}:{grpc}"
