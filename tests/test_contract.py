import numpy as np

from adgen import contract
def test_public_contract_matches_design():
    spec = contract.public_spec()
    assert spec.name == "adgen"
    assert [(t.name, t.triton_dtype, t.dims) for t in spec.inputs] == [
        ("PROMPT", "TYPE_STRING", (1,)), ("SEED", "TYPE_INT64", (1,))]
    assert [(t.name, t.triton_dtype, t.dims) for t in spec.outputs] == [
        ("IMAGE", "TYPE_UINT8", (64, 64, 3))]
    assert spec.max_batch_size == 256
    assert contract.MAX_PROMPT_BYTES == 2000


def test_internal_models_chain_together():
    specs = contract.all_specs(z_dim=100)
    assert set(specs) == {"adgen", "adgen_256", "text_encoder", "latents", "generator",
                          "postprocess", "upsampler"}
    gen = specs["generator"]
    assert gen.input("EMBEDDING").dims == (contract.EMBED_DIM,)
    assert gen.input("Z").dims == (100,)
    # The generator's output is exactly the postprocess input.
    assert gen.outputs[0] == specs["postprocess"].inputs[0]
    assert specs["text_encoder"].outputs[0] == gen.inputs[0]
    assert specs["latents"].outputs[0] == gen.inputs[1]
    # 256 px: the generator's output feeds the upsampler, 4x each side
    up = specs["upsampler"]
    assert up.inputs[0] == gen.outputs[0]
    assert up.outputs[0].dims == (3, 64 * contract.UPSCALE, 64 * contract.UPSCALE)
    assert specs["adgen_256"].inputs == specs["adgen"].inputs
    assert specs["adgen_256"].outputs[0].dims == (256, 256, 3)


def test_client_dtypes():
    assert contract.PROMPT.client_dtype == "BYTES"
    assert contract.SEED.client_dtype == "INT64"
    assert contract.IMAGE.client_dtype == "UINT8"
    assert contract.IMAGE.dtype == np.uint8
