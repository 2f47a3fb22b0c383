"""Call adgen's Triton models directly with tritonclient (no adgen install needed).

    pip install 'tritonclient[grpc]' numpy pillow
    python examples/call_triton.py "a red apple, flat sticker style, on a teal background" \\
        --seed 7 -o apple.png
    python examples/call_triton.py "a rocket" --seed 1 --model adgen_256 -o rocket256.png

The public models take a batch of PROMPT (BYTES, one UTF-8 string per item, <= 2,000 bytes)
and SEED (INT64, one per item, 0 .. 2**63-1) and return IMAGE (UINT8, RGB, HWC):
[64, 64, 3] from `adgen`, [256, 256, 3] from `adgen_256`. The same (prompt, seed, model
version) gives the same pixels on every client.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException


def generate(url: str, model: str, prompts: list[str], seeds: list[int]) -> np.ndarray:
    """-> uint8 [B, H, W, 3]; raises tritonclient's InferenceServerException on errors."""
    client = grpcclient.InferenceServerClient(url)
    prompt = grpcclient.InferInput("PROMPT", [len(prompts), 1], "BYTES")
    prompt.set_data_from_numpy(np.array([[p.encode("utf-8")] for p in prompts], dtype=object))
    seed = grpcclient.InferInput("SEED", [len(seeds), 1], "INT64")
    seed.set_data_from_numpy(np.array(seeds, dtype=np.int64).reshape(-1, 1))
    result = client.infer(model, [prompt, seed],
                          outputs=[grpcclient.InferRequestedOutput("IMAGE")])
    client.close()
    return result.as_numpy("IMAGE")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="One image from adgen's Triton model, as a PNG.")
    ap.add_argument("prompt")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="adgen", help="adgen (64 px) or adgen_256")
    ap.add_argument("--url", default="127.0.0.1:8001", help="Triton gRPC address")
    ap.add_argument("-o", "--out", default="image.png")
    args = ap.parse_args(argv)
    try:
        image = generate(args.url, args.model, [args.prompt], [args.seed])[0]
    except InferenceServerException as exc:
        print(f"error: {exc.message()}", file=sys.stderr)
        return 1
    Image.fromarray(image).save(args.out)
    print(f"wrote {args.out} ({image.shape[1]}x{image.shape[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
