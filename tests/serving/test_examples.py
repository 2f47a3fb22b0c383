"""examples/call_triton.py and the README's curl call, against the real server."""
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.triton

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "call_triton.py"
PROMPT = "a red apple, flat sticker style, on a teal background"


def _adgen_client_image(triton, model, seed):
    """The same request through adgen's own client (adgen.serving.jobs.client), for comparison."""
    import asyncio

    from adgen.serving.jobs.client import AdgenClient, ClientConfig

    async def go():
        async with AdgenClient(ClientConfig(urls=(triton.grpc_url,), model=model)) as client:
            images, _ = await client.infer([PROMPT], [seed])
            return images[0]
    return asyncio.run(go())


@pytest.mark.parametrize("model,side", [("adgen", 64), ("adgen_256", 256)])
def test_example_script_writes_the_served_image(triton, tmp_path, model, side):
    out = tmp_path / "x.png"
    run = subprocess.run([sys.executable, str(EXAMPLE), PROMPT, "--seed", "7", "--model", model,
                          "--url", triton.grpc_url, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    with Image.open(out) as im:
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.shape == (side, side, 3)
    assert pixels.tobytes() == _adgen_client_image(triton, model, 7).tobytes()


def test_example_script_reports_a_bad_request_in_one_line(triton, tmp_path):
    run = subprocess.run([sys.executable, str(EXAMPLE), "x" * 2001, "--url", triton.grpc_url,
                          "-o", str(tmp_path / "y.png")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 1
    assert run.stderr.startswith("error:") and "2000" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and not (tmp_path / "y.png").exists()


def test_kserve_v2_http_json_call_as_in_the_readme(triton):
    """The README's curl body, sent to /v2/models/adgen/infer."""
    body = {"inputs": [{"name": "PROMPT", "shape": [1, 1], "datatype": "BYTES",
                        "data": [PROMPT]},
                       {"name": "SEED", "shape": [1, 1], "datatype": "INT64", "data": [7]}]}
    req = urllib.request.Request(f"http://{triton.http_url}/v2/models/adgen/infer",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        reply = json.loads(resp.read())
    out = reply["outputs"][0]
    assert out["name"] == "IMAGE" and out["datatype"] == "UINT8" and out["shape"] == [1, 64, 64, 3]
    pixels = np.array(out["data"], dtype=np.uint8).reshape(64, 64, 3)
    assert pixels.tobytes() == _adgen_client_image(triton, "adgen", 7).tobytes()
