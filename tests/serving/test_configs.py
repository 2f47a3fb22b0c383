"""Committed and built config.pbtxt files parse as Triton ModelConfig and match the contract."""
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from adgen.export.repo import INTERNAL_STAGES, check_against_contract
from adgen.contract import all_specs

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "triton_models").glob("*/config.pbtxt"))


def parse(path: Path):
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_every_model_of_the_contract_has_a_committed_config():
    names = {p.parent.name for p in COMMITTED}
    served = set(all_specs()) - set(INTERNAL_STAGES)
    assert served <= names
    for name in served:  # every stage is a python model, `adgen`/`adgen_256` the fused ones
        assert parse(ROOT / "triton_models" / name / "config.pbtxt").backend == "python"
    assert (ROOT / "triton_models" / "model.py").is_file()  # the one python model, by name


def test_the_upsampler_runs_inside_adgen_256_not_as_a_model_of_its_own(model_repo):
    """Decided: the upsampler ONNX runs inside the fused adgen_256 only (no Triton model of
    its own, so no process hop); its contract spec still checks the exported ONNX's I/O."""
    for stage in INTERNAL_STAGES:
        assert not (ROOT / "triton_models" / stage).exists()
        assert not (model_repo / stage).exists()
    assert list((model_repo / "adgen_256" / "1").rglob("upsampler.onnx"))
    assert not list((model_repo / "adgen" / "1").rglob("upsampler.onnx"))


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_config_matches_contract(path):
    config = parse(path)
    assert config.name == path.parent.name
    assert check_against_contract(config) == []
    if config.backend == "python":  # concatenates a dynamic batch's requests (runtime)
        assert config.HasField("dynamic_batching")


def test_check_against_contract_notices_drift():
    config = parse(ROOT / "triton_models" / "adgen" / "config.pbtxt")
    config.output[0].dims[0] = 32
    config.max_batch_size = 8
    problems = check_against_contract(config)
    assert len(problems) == 2 and any("max_batch_size" in p for p in problems)


def test_ensemble_steps_wire_the_contract_stages_from_prompt_and_seed_to_image():
    """Every step is a contract stage fed by its input names and feeding its output names;
    each tensor it reads is an ensemble input or an earlier step's output, and the steps
    produce the ensemble's outputs."""
    config = parse(ROOT / "triton_models" / "adgen_ensemble" / "config.pbtxt")
    specs = all_specs()
    have = {t.name for t in config.input}
    for step in config.ensemble_scheduling.step:
        spec = specs[step.model_name]
        assert set(step.input_map) == {t.name for t in spec.inputs}, step.model_name
        assert set(step.output_map) == {t.name for t in spec.outputs}, step.model_name
        assert set(step.input_map.values()) <= have, f"{step.model_name} reads a tensor not made yet"
        have |= set(step.output_map.values())
    assert {t.name for t in config.output} <= have


def test_built_repository_configs_carry_z_dim_and_model_identity(model_repo, small_onnx):
    import json

    from adgen.contract import DEFAULT_Z_DIM
    manifest = json.loads((small_onnx / "manifest.json").read_text())
    z_dim = manifest["z_dim"]
    # a z other than the committed files' proves the builder rewrites Z's dims
    assert z_dim != DEFAULT_Z_DIM
    for name in ("adgen", "adgen_256", "generator"):
        config = parse(model_repo / name / "config.pbtxt")
        assert check_against_contract(config, z_dim=z_dim) == []
        assert config.parameters["generator_sha256"].string_value == \
            manifest["files"]["generator.onnx"]["sha256"]
    assert (model_repo / "adgen" / "1" / "adgen" / "serving" / "runtime" / "backend.py").is_file()
    assert (model_repo / "adgen" / "1" / "text_encoder" / "model.onnx").is_file()
    assert (model_repo / "adgen" / "1" / "generator" / "generator.onnx").is_file()


def test_repository_builder_refuses_to_overwrite_without_force(model_repo, small_onnx):
    from adgen.export.repo import RepoError, build_repository
    with pytest.raises(RepoError, match="use --force"):
        build_repository(model_repo, model=small_onnx)
    with pytest.raises(RepoError, match="unknown variant"):
        build_repository(model_repo.parent / "other", variant="nope", model=small_onnx)
