"""Bad requests against the real tritonserver: wrong dtype or shape, empty
batch, a 2,001-byte prompt, non-UTF-8 bytes, a batch over max_batch_size, broken framing,
unknown inputs and outputs, NaN tensors, malformed HTTP. Each gets a clean INVALID_ARGUMENT
(HTTP 400) of its own, and after every one the server still answers a good request with
the very same bytes as before."""
from __future__ import annotations

import asyncio
import json
import struct
import urllib.error
import urllib.request

import numpy as np
import pytest

from adgen.contract import MAX_BATCH_SIZE, MAX_PROMPT_BYTES

pytestmark = pytest.mark.triton

GOOD = "a red apple, flat sticker style, on a teal background"


def _input(name, shape, dtype, array=None, raw=None):
    import tritonclient.grpc as grpcclient
    inp = grpcclient.InferInput(name, shape, dtype)
    if array is not None:
        inp.set_data_from_numpy(array)
    if raw is not None:
        inp._raw_content = raw  # hand-made wire bytes: what a buggy or hostile client sends
    return inp


def _prompts(*values):
    return np.array([[v] for v in values], dtype=np.object_)


def _seeds(*values, dtype=np.int64):
    return np.array([[v] for v in values], dtype=dtype)


def bad_requests():
    """name -> (inputs, requested outputs or None, substring of the server's message)."""
    from adgen.serving.jobs.client import make_inputs
    seed1 = _input("SEED", [1, 1], "INT64", _seeds(1))
    prompt1 = _input("PROMPT", [1, 1], "BYTES", _prompts(b"a red apple"))
    long_prompt = "x" * (MAX_PROMPT_BYTES + 1)
    return {
        "SEED as FP32": ([prompt1, _input("SEED", [1, 1], "FP32", _seeds(1, dtype=np.float32))],
                         None, "data-type is 'FP32'"),
        "SEED as INT32": ([prompt1, _input("SEED", [1, 1], "INT32", _seeds(1, dtype=np.int32))],
                          None, "data-type is 'INT32'"),
        "PROMPT as INT32": ([_input("PROMPT", [1, 1], "INT32", _seeds(1, dtype=np.int32)),
                             seed1], None, "data-type is 'INT32'"),
        "PROMPT shape [1,2]": ([_input("PROMPT", [1, 2], "BYTES",
                                       np.array([[b"a", b"b"]], dtype=np.object_)), seed1],
                               None, "unexpected shape for input 'PROMPT'"),
        "SEED shape [1]": ([prompt1, _input("SEED", [1], "INT64", np.array([1], np.int64))],
                           None, "unexpected shape for input 'SEED'"),
        "empty batch [0,1]": ([_input("PROMPT", [0, 1], "BYTES", np.zeros((0, 1), np.object_)),
                               _input("SEED", [0, 1], "INT64", np.zeros((0, 1), np.int64))],
                              None, "byte size mismatch"),
        "2,001-byte prompt": (make_inputs([long_prompt], [1]), None, "over the 2000-byte limit"),
        "2,001 bytes of 3-byte characters": (make_inputs(["\u20ac" * 667], [1]), None,
                                             "2001 bytes"),
        "non-UTF-8 bytes": ([_input("PROMPT", [1, 1], "BYTES", _prompts(b"caf\xe9 \xff\xfe")),
                             seed1], None, "not valid UTF-8"),
        "negative seed": (make_inputs([GOOD], [-1]), None, "got -1"),
        f"batch of {MAX_BATCH_SIZE + 1}": (make_inputs([GOOD] * (MAX_BATCH_SIZE + 1),
                                                       list(range(MAX_BATCH_SIZE + 1))),
                                           None, f"must be <= {MAX_BATCH_SIZE}"),
        "missing SEED": ([prompt1], None, "missing required input(s) ['SEED']"),
        "unknown extra input": ([prompt1, seed1, _input("EXTRA", [1, 1], "INT64", _seeds(1))],
                                None, "expected 2 inputs but got 3"),
        "PROMPT batch 2, SEED batch 3": (make_inputs(["a", "b"], [1, 2])[:1]
                                         + make_inputs(["a", "b", "c"], [1, 2, 3])[1:],
                                         None, "batch size does not match"),
        "SEED with 4 of 8 bytes": ([prompt1, _input("SEED", [1, 1], "INT64", raw=b"\0" * 4)],
                                   None, "Expected 8, got 4"),
        "BYTES length prefix past the end": (
            [_input("PROMPT", [1, 1], "BYTES", raw=struct.pack("<I", 1000) + b"abc"), seed1],
            None, "incomplete string data"),
        "unknown output": (make_inputs([GOOD], [1]), ["NOPE"], "unexpected inference output"),
    }


def infer(url, inputs, outputs=None, model="adgen"):
    import tritonclient.grpc as grpcclient
    with grpcclient.InferenceServerClient(url) as c:
        outs = [grpcclient.InferRequestedOutput(o) for o in outputs] if outputs else None
        return c.infer(model, inputs, outputs=outs)


def good_image(url) -> bytes:
    from adgen.serving.jobs.client import make_inputs
    return infer(url, make_inputs([GOOD, "blue car"], [7, 8])).as_numpy("IMAGE").tobytes()


def test_each_bad_grpc_request_gets_its_own_clean_error_and_the_server_keeps_serving(triton):
    from tritonclient.utils import InferenceServerException
    reference = good_image(triton.grpc_url)
    for name, (inputs, outputs, message) in bad_requests().items():
        with pytest.raises(InferenceServerException) as info:
            infer(triton.grpc_url, inputs, outputs)
        assert "INVALID_ARGUMENT" in str(info.value.status()), (name, info.value.status())
        assert message in (info.value.message() or ""), (name, info.value.message())
        assert good_image(triton.grpc_url) == reference, f"server changed after {name}"
    assert triton.is_running()


def test_nan_and_infinite_tensors_are_refused_by_the_internal_generator(triton):
    """The repository also serves the bare `generator` (EMBEDDING, Z -> RAW_IMAGE)."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException
    with grpcclient.InferenceServerClient(triton.grpc_url) as c:
        cfg = c.get_model_config("generator", as_json=True)["config"]
    dims = {i["name"]: [int(d) for d in i["dims"]] for i in cfg["input"]}
    emb = np.zeros([1, *dims["EMBEDDING"]], np.float32)
    z = np.zeros([1, *dims["Z"]], np.float32)
    for bad in (np.nan, np.inf):
        poisoned = emb.copy()
        poisoned[0, 3] = bad
        with pytest.raises(InferenceServerException, match="NaN or infinity"):
            infer(triton.grpc_url, [_input("EMBEDDING", list(poisoned.shape), "FP32", poisoned),
                                    _input("Z", list(z.shape), "FP32", z)], model="generator")
    ok = infer(triton.grpc_url, [_input("EMBEDDING", list(emb.shape), "FP32", emb),
                                 _input("Z", list(z.shape), "FP32", z)], model="generator")
    assert np.isfinite(ok.as_numpy("RAW_IMAGE")).all()


def _http(url, body: bytes, headers=None):
    req = urllib.request.Request(url, data=body, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_malformed_http_requests_get_400_and_the_server_keeps_serving(triton):
    url = f"http://{triton.http_url}/v2/models/adgen/infer"
    reference = good_image(triton.grpc_url)
    good = {"inputs": [{"name": "PROMPT", "shape": [1, 1], "datatype": "BYTES", "data": [GOOD]},
                       {"name": "SEED", "shape": [1, 1], "datatype": "INT64", "data": [7]}]}
    prompt, seed = good["inputs"]
    no_data = {k: v for k, v in prompt.items() if k != "data"}
    # name -> (body, status, message). Triton's HTTP frontend answers JSON it cannot parse
    # with 500 (its choice, not adgen's; the message is still the request's own fault).
    cases = {
        "not JSON": (b"{this is not json", 500, "failed to parse the request JSON"),
        "JSON array": (b"[1, 2, 3]", 500, "Unable to parse 'inputs'"),
        "no inputs": (b"{}", 500, "Unable to parse 'inputs'"),
        "string seed": (json.dumps({"inputs": [prompt, {**seed, "data": ["seven"]}]}).encode(),
                        500, "Unable to parse 'data'"),
        "data shorter than shape": (json.dumps({"inputs": [{**prompt, "shape": [2, 1]},
                                                           seed]}).encode(),
                                    400, "batch size does not match"),
        "2,001-byte prompt": (json.dumps({"inputs": [
            {**prompt, "data": ["y" * (MAX_PROMPT_BYTES + 1)]}, seed]}).encode(),
            400, "over the 2000-byte limit"),
        "binary size past the body": (json.dumps({"inputs": [
            {**no_data, "parameters": {"binary_data_size": 10_000}}, seed]}).encode(),
            400, "expecting 10000 additional bytes"),
    }
    for name, (body, expect_status, message) in cases.items():
        headers = {"Inference-Header-Content-Length": str(len(body))} \
            if name == "binary size past the body" else None
        status, text = _http(url, body, headers)
        assert status == expect_status, (name, status, text[:200])
        assert message in json.loads(text)["error"], (name, text[:200])
        assert good_image(triton.grpc_url) == reference, f"server changed after {name}"
    status, text = _http(url, json.dumps(good).encode())
    assert status == 200 and json.loads(text)["outputs"][0]["name"] == "IMAGE"


def test_a_flood_of_bad_requests_mixed_with_good_ones(triton):
    """64 concurrent requests, every other one bad in a way only the python backend can
    see (so they share dynamic batches with good ones): each good one gets exactly the
    image it gets alone, each bad one its own INVALID_ARG."""
    import tritonclient.grpc.aio as aio
    from tritonclient.utils import InferenceServerException

    from adgen.serving.jobs.client import make_inputs
    bad = [lambda i: make_inputs(["z" * (MAX_PROMPT_BYTES + 1 + i)], [i]),
           lambda i: make_inputs([GOOD], [-1 - i]),
           lambda i: [_input("PROMPT", [1, 1], "BYTES", _prompts(b"\xff" * (i + 1))),
                      _input("SEED", [1, 1], "INT64", _seeds(i))]]
    alone = {i: infer(triton.grpc_url, make_inputs([f"{GOOD} {i}"], [i])).as_numpy("IMAGE")
             for i in range(0, 64, 2)}

    async def main():
        async with aio.InferenceServerClient(triton.grpc_url) as c:
            async def one(i):
                inputs = make_inputs([f"{GOOD} {i}"], [i]) if i % 2 == 0 else bad[i % 3](i)
                try:
                    return (await c.infer("adgen", inputs)).as_numpy("IMAGE")
                except InferenceServerException as exc:
                    return exc
            return await asyncio.gather(*(one(i) for i in range(64)))
    results = asyncio.run(main())
    for i, res in enumerate(results):
        if i % 2 == 0:
            assert isinstance(res, np.ndarray) and res.tobytes() == alone[i].tobytes(), i
        else:
            assert isinstance(res, InferenceServerException), i
            assert "INVALID_ARG" in str(res.status()), (i, res.status(), res.message())
    assert triton.is_running()
