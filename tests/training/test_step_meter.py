"""The one step meter of the training loops, and options an arch does not read."""
from __future__ import annotations

import math

import pytest

from adgen.training.loop import StepMeter, TrainError
from adgen.training.train import resolve_config


def test_meter_rows_are_window_means_and_start_a_new_window():
    m = StepMeter(batch_size=8)
    m.add({"l1": 1.0}, 0.5, step=1)
    m.add({"l1": 3.0}, 1.5, step=2)
    row = m.row(step=2)
    assert row["l1"] == 2.0 and row["step_time_s"] == 1.0 and row["images_per_s"] == 8.0
    m.add({"l1": 5.0}, 2.0, step=3)
    assert m.row(step=3)["l1"] == 5.0                       # the old window is gone


def test_a_non_finite_loss_stops_the_run_with_the_step():
    m = StepMeter(batch_size=4)
    with pytest.raises(TrainError, match="step 7"):
        m.add({"l1": math.nan}, 0.1, step=7)


@pytest.mark.parametrize("option", ["beta1", "lr_decay", "diffaug", "ema"])
def test_layered_refuses_options_its_loop_never_reads(option):
    value = {"beta1": 0.5, "lr_decay": "none", "diffaug": "", "ema": False}[option]
    with pytest.raises(TrainError, match=option.replace("_", "-")):
        resolve_config("layered", max_steps=1, **{option: value})
    assert getattr(resolve_config("film", max_steps=1, **{option: value}), option) == value


def test_resume_without_arch_resumes_the_run_as_what_it_was(tmp_path):
    import json

    from click.testing import CliRunner

    from adgen.cli.train import train as train_cmd
    run = tmp_path / "00000-film"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"config": {"arch": "film"}}))
    out = CliRunner().invoke(train_cmd, ["--resume", str(run), "--dry-run"])
    assert out.exit_code == 0 and json.loads(out.output)["arch"] == "film"
    out = CliRunner().invoke(train_cmd, ["--dry-run"])          # no flags: the release recipe
    assert out.exit_code == 0 and "shape_minutes" in json.loads(out.output)
