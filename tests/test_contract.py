"""The tensor contract holds where it is enforced (the runtime's validation and postprocess)
and where it is used (the client's wire dtypes, the stages feeding one another)."""
import numpy as np
import pytest
from tritonclient.utils import np_to_triton_dtype

from adgen import contract
from adgen.serving.runtime.backend import (InvalidInput, check_seeds, decode_prompt, latents,
                                           to_uint8)


@pytest.mark.parametrize("size", contract.SIZES)
def test_public_image_is_what_postprocess_makes_of_the_raw_image(size):
    """The public IMAGE spec (dtype and HWC dims) at both sizes is what the postprocess
    stage returns for the generator's (or the upsampler's) raw output."""
    spec = contract.public_spec_for_size(size)
    raw_spec = contract.RAW_IMAGE if size == contract.IMAGE_SIZE else contract.RAW_IMAGE_256
    raw = np.random.default_rng(0).uniform(-1, 1, (2, *raw_spec.dims)).astype(raw_spec.dtype)
    (image,) = spec.outputs
    out = to_uint8(raw)
    assert out.dtype == image.dtype and out.shape == (2, *image.dims)
    assert [t.name for t in spec.inputs] == [contract.PROMPT.name, contract.SEED.name]


def test_prompt_limit_counts_utf8_bytes():
    at_limit = "é" * (contract.MAX_PROMPT_BYTES // 2)  # 2 bytes per character
    assert decode_prompt(at_limit.encode()) == at_limit
    with pytest.raises(InvalidInput, match=f"over the {contract.MAX_PROMPT_BYTES}-byte limit"):
        decode_prompt((at_limit + "a").encode())


def test_seed_range_is_enforced_and_latents_have_the_contract_z():
    seeds = np.array([0, contract.MAX_SEED], dtype=np.uint64)
    assert check_seeds(seeds).tolist() == [0, contract.MAX_SEED]
    for bad in (np.array([contract.MAX_SEED + 1], dtype=np.uint64), np.array([-1])):
        with pytest.raises(InvalidInput, match="SEED must be in"):
            check_seeds(bad)
    z = latents(np.array([1, 2]), 48)
    assert z.shape[1:] == contract.latents_spec(48).output("Z").dims and z.dtype == np.float32


def test_client_wire_dtypes_are_tritonclients_names_for_the_tensors():
    for spec in contract.all_specs().values():
        for t in (*spec.inputs, *spec.outputs):
            assert t.client_dtype == np_to_triton_dtype(t.dtype), (spec.name, t.name)
            assert t.triton_dtype == "TYPE_" + ("STRING" if t.client_dtype == "BYTES"
                                                else t.client_dtype)


def test_internal_models_chain_together():
    specs = contract.all_specs(z_dim=100)
    assert set(specs) == {"adgen", "adgen_256", "text_encoder", "latents", "generator",
                          "postprocess", "upsampler"}
    gen = specs["generator"]
    assert gen.input("Z").dims == (100,)
    # Each stage's output is exactly the next stage's input.
    assert specs["text_encoder"].outputs[0] == gen.input("EMBEDDING")
    assert specs["latents"].outputs[0] == gen.input("Z")
    assert gen.outputs[0] == specs["postprocess"].inputs[0]
    # 256 px: the generator's output feeds the upsampler, UPSCALE x each side
    up = specs["upsampler"]
    assert up.inputs[0] == gen.outputs[0]
    assert up.outputs[0].dims == (3, *(d * contract.UPSCALE for d in gen.outputs[0].dims[1:]))
    assert specs["adgen_256"].inputs == specs["adgen"].inputs
