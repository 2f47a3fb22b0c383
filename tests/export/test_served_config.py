"""The served config: what `adgen repo build` writes for the fused model (rule, cached tune,
tune now), its checks, and the client defaults that follow it."""
from __future__ import annotations

import json

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from adgen.cli import main
from adgen.export import served_config as SC
from adgen.export.repo import RepoError, build_repository, check_against_contract, \
    resolve_generator
from adgen.serving.jobs.client import served_defaults
from adgen.serving.jobs.served import ServedConfig, ServedConfigError, from_pbtxt
from benchmarks.batching import pick_setting


@pytest.fixture
def artifacts(tmp_path, monkeypatch):
    """A fresh artifacts folder: no tune cache from the developer's own builds."""
    monkeypatch.setenv("ADGEN_ARTIFACTS", str(tmp_path / "artifacts"))
    return tmp_path / "artifacts"


def _build(out, film_onnx, text_encoder_dir, **kw):
    return build_repository(out, model=film_onnx, text_encoder=text_encoder_dir,
                            progress=False, gpu=False, upsampler=False, **kw)


def _info(repo) -> dict:
    return json.loads((repo / "adgen_repository.json").read_text())["served"]


def test_the_rule_uses_every_core_as_single_threaded_instances():
    for cores in (1, 2, 4):
        s = ServedConfig.for_host(cores)
        assert (s.instances, s.threads) == (cores, 1)
        assert s.concurrency == 2 * s.instances and s.preferred == (s.batch,)
    big = ServedConfig.for_host(64)
    assert big.instances * big.threads == 64 and big.instances < 64
    with pytest.raises(ServedConfigError, match="cores must be >= 1"):
        ServedConfig.for_host(0)


def test_tune_picks_the_fastest_split_at_the_rule_batch_unless_another_is_clearly_faster():
    rows = [{"instances": 1, "threads": 2, "batch": 64, "images_per_s": 300.0},
            {"instances": 2, "threads": 1, "batch": 16, "images_per_s": 405.0},
            {"instances": 2, "threads": 1, "batch": 32, "images_per_s": 398.0},
            {"instances": 2, "threads": 1, "batch": 64, "images_per_s": 400.0}]
    s = SC.pick_tuned(rows)
    assert (s.instances, s.threads, s.batch, s.preferred) == (2, 1, 32, (32,))
    assert s.concurrency == 4 and s.source == "tune"
    rows[1]["images_per_s"] = 480.0  # batch 16 20% faster: taken
    assert SC.pick_tuned(rows).batch == 16
    rows[0]["images_per_s"] = 900.0  # one instance with both threads now fastest
    assert (SC.pick_tuned(rows).instances, SC.pick_tuned(rows).batch) == (1, 64)
    with pytest.raises(ServedConfigError, match="measured nothing"):
        SC.pick_tuned([{**rows[0], "images_per_s": 0.0}])


@pytest.mark.parametrize("bad, match", [
    ({"instances": 0}, "instances must be an integer >= 1"),
    ({"threads": -1}, "threads must be an integer >= 0"),
    ({"max_batch_size": 64}, "max_batch_size must be the contract's 256"),
    ({"preferred": (512,)}, r"preferred batch sizes must be integers in \[1, 256\]"),
    ({"batch": 300}, "batch 300 > max_batch_size 256"),
    ({"source": "guess"}, "source must be one of"),
])
def test_served_config_values_out_of_range_are_one_line_errors(bad, match):
    with pytest.raises(ServedConfigError, match=match) as err:
        ServedConfig(**bad).checked()
    assert "\n" not in str(err.value)


def test_default_build_writes_the_rule_and_it_matches_the_contract(artifacts, film_onnx,
                                                                   text_encoder_dir, tmp_path):
    repo = _build(tmp_path / "repo", film_onnx, text_encoder_dir)
    served = from_pbtxt(repo / "adgen" / "config.pbtxt")
    rule = ServedConfig.for_host()
    assert (served.instances, served.threads, served.preferred, served.delay_us) == \
        (rule.instances, rule.threads, rule.preferred, rule.delay_us)
    config = text_format.Parse((repo / "adgen" / "config.pbtxt").read_text(),
                               model_config_pb2.ModelConfig())
    assert not check_against_contract(config)
    info = _info(repo)
    assert info["source"] == "rule" and info["models"] == ["adgen"]
    assert not (artifacts / "served").exists()  # a default build measures nothing


def test_tune_measures_caches_and_a_default_build_reuses_it(artifacts, film_onnx,
                                                           text_encoder_dir, tmp_path,
                                                           monkeypatch):
    monkeypatch.setattr(SC, "TUNE_SECONDS", 0.05)
    monkeypatch.setattr(SC, "TUNE_ROUNDS", 1)
    monkeypatch.setattr(SC, "TUNE_BATCHES", (4, 32))
    tuned = _build(tmp_path / "tuned", film_onnx, text_encoder_dir, served="tune")
    info = _info(tuned)
    assert info["source"] == "tune" and info["batch"] in (4, 32)
    assert info["instances"] * max(info["threads"], 1) <= SC.host_cores()
    served = from_pbtxt(tuned / "adgen" / "config.pbtxt")  # parses, within the contract
    assert served.preferred == (info["batch"],) and served.instances == info["instances"]
    (cache,) = (artifacts / "served").glob("*.json")
    rows = json.loads(cache.read_text())["rows"]
    assert {(r["instances"], r["threads"]) for r in rows} == set(SC.splits(SC.host_cores()))
    again = _info(_build(tmp_path / "again", film_onnx, text_encoder_dir))
    assert again["source"] == "tune" and "cached" in again["from"]
    assert {k: again[k] for k in ("instances", "threads", "batch", "preferred")} == \
        {k: info[k] for k in ("instances", "threads", "batch", "preferred")}
    rule = _info(_build(tmp_path / "rule", film_onnx, text_encoder_dir, served="rule"))
    assert rule["source"] == "rule"


@pytest.mark.parametrize("text, match", [
    ("{not json", "not JSON"),
    ('{"rows": []}', 'no "served" object'),
    ('{"served": {"instances": 2}}', "missing keys"),
    ('{"served": {"instances": 0, "threads": 1, "max_batch_size": 256, "preferred": [32], '
     '"delay_us": 0, "batch": 32, "concurrency": 4}}', "instances must be"),
])
def test_a_malformed_tune_cache_warns_in_one_line_and_falls_back_to_the_rule(
        artifacts, film_onnx, text_encoder_dir, tmp_path, caplog, text, match):
    path = SC.cache_path(resolve_generator(film_onnx).sha256)
    path.parent.mkdir(parents=True)
    path.write_text(text)
    with pytest.raises(ServedConfigError, match=match):
        SC.read_cache(path)
    with caplog.at_level("WARNING", logger="adgen.export"):
        repo = _build(tmp_path / "repo", film_onnx, text_encoder_dir)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
                  and "tune cache" in r.getMessage()]
    assert "\n" not in warning and "using the rule" in warning
    assert _info(repo)["source"] == "rule"


def test_bad_served_options_are_refused_in_one_line(artifacts, film_onnx, text_encoder_dir,
                                                    tmp_path, capsys):
    with pytest.raises(RepoError, match="served config 'fast': choose one of auto, rule, tune"):
        _build(tmp_path / "a", film_onnx, text_encoder_dir, served="fast")
    with pytest.raises(RepoError, match="--tune calibrates the fused python model on CPU"):
        build_repository(tmp_path / "b", model=film_onnx, text_encoder=text_encoder_dir,
                         progress=False, gpu=True, upsampler=False, served="tune")
    with pytest.raises(RepoError, match="breaks the contract|max_batch_size"):
        _build(tmp_path / "c", film_onnx, text_encoder_dir,
               served=ServedConfig(max_batch_size=64))
    for argv, match in ((["--tune", "--untuned"], "--tune and --untuned exclude each other"),
                        (["--tune", "--variant", "python-ensemble"], "--tune calibrates")):
        assert main(["repo", "build", "-o", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert match in err and len(err.splitlines()) == 1
    assert not any((tmp_path / n).exists() for n in "abcd")


def test_generate_defaults_follow_the_served_config(artifacts, film_onnx, text_encoder_dir,
                                                    tmp_path, capsys):
    """A repository built with another served config: `adgen generate --engine local`
    sends its batch and concurrency; options still win."""
    served = ServedConfig(instances=3, threads=1, preferred=(24,), batch=24, concurrency=6)
    repo = _build(tmp_path / "repo", film_onnx, text_encoder_dir, served=served)
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red apple\n")

    def dry(*extra):
        assert main(["generate", str(prompts), "-o", str(tmp_path / "o"), "--engine", "local",
                     "--model", str(repo), "--dry-run", *extra]) == 0
        out = json.loads(capsys.readouterr().out)
        return out["config"]["batch_size"], out["config"]["concurrency"]
    assert dry() == (24, 6)
    assert dry("--batch-size", "8") == (8, 6)
    (repo / "adgen" / "config.pbtxt").write_text("instance_group [ { count: oops } ]")
    assert main(["generate", str(prompts), "-o", str(tmp_path / "o"), "--engine", "local",
                 "--model", str(repo), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable model config" in err and len(err.splitlines()) == 1


def test_client_defaults_without_a_server_are_this_hosts_rule():
    served, where = served_defaults(("127.0.0.1:1",), timeout_s=1.0)
    assert served == ServedConfig.for_host() and "no server" in where


def test_a_served_config_reads_back_from_a_triton_config_json():
    config = {"config": {"name": "adgen", "max_batch_size": 256,
                         "instance_group": [{"count": 3, "kind": "KIND_CPU"}],
                         "dynamic_batching": {"preferred_batch_size": [16, 48],
                                              "max_queue_delay_microseconds": "500"},
                         "parameters": {"intra_op_threads": {"string_value": "2"}}}}
    s = ServedConfig.from_model_config(config)
    assert (s.instances, s.threads, s.delay_us, s.batch, s.concurrency) == (3, 2, 500, 48, 6)
    with pytest.raises(ServedConfigError, match="intra_op_threads 'x' is not an integer"):
        ServedConfig.from_model_config({"parameters": {"intra_op_threads":
                                                       {"string_value": "x"}}})


def _row(label, c16, job, served=False):
    return {"label": label, "served": served, "committed": False,
            "b1_c1": {"latency_ms": {"p50": 10.0, "p99": 20.0}},
            "b1_c16": {"images_per_s": c16}, "job_shape": {"images_per_s": job}}


def test_the_sweep_keeps_the_served_config_unless_another_is_clearly_better():
    rows = [_row("served", 100, 100, served=True), _row("other", 105, 105),
            _row("stopped early", 0, 50)]
    del rows[2]["b1_c1"], rows[2]["b1_c16"]  # stopped early: only the client load
    assert pick_setting(rows)["label"] == "served"  # +5%: noise on one pass
    rows[1] = _row("other", 130, 130)
    assert pick_setting(rows)["label"] == "other"  # +30%: a better config
    assert "eligible" not in rows[2]
