"""`adgen train`: a run folder, new or resumed, trained by its arch's trainer (the GAN loop of
adgen.training.train, or the layered one of adgen.training.train_layered).

    train(resolve_config("layered", max_steps=100))  ->  runs/<nnnnn>-layered/checkpoints/final
"""
from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path

from adgen.atomic import atomic_write_json
from adgen.training.loop import TrainError, environment, next_run_dir
from adgen.training.train import RESUME_OVERRIDES, TrainConfig, Trainer, model_kwargs
from adgen.training.train_layered import LayeredTrainer


def _trainer(cfg: TrainConfig) -> Trainer:
    if cfg.arch == "layered":
        return LayeredTrainer(cfg)
    return Trainer(cfg)


def train(cfg: TrainConfig) -> Path:
    """Trains per cfg (or resumes cfg.resume); returns the final checkpoint folder."""
    if cfg.resume:
        run_dir = Path(cfg.resume)
        if not (run_dir / "config.json").is_file():
            raise TrainError(f"--resume {run_dir}: not a run folder (no config.json)")
        saved = json.loads((run_dir / "config.json").read_text())["config"]
        # The run's own config, with a new budget if one was given.
        budget = {k: getattr(cfg, k) for k in ("max_steps", "max_minutes", "progress")}
        budget = {k: v for k, v in budget.items() if v is not None}
        # Stage 2 of the layered arch is re-run whole on resume, so its options may change.
        budget |= {k: getattr(cfg, k) for k in RESUME_OVERRIDES
                   if getattr(cfg, k) != getattr(TrainConfig, k)}
        cfg = replace(TrainConfig(**saved), resume=str(run_dir), **budget)
        trainer = _trainer(cfg)
        latest = run_dir / "checkpoints" / "latest"
        if not latest.is_dir():
            raise TrainError(f"--resume {run_dir}: no checkpoints/latest to resume from")
        trainer.load_state(latest)
    else:
        trainer = _trainer(cfg)
        desc = cfg.desc or f"{cfg.arch}{'-fake' if cfg.fake_data else ''}"
        for _ in range(100):  # two runs started together race for the same number
            run_dir = next_run_dir(Path(cfg.runs_dir), desc)
            try:
                run_dir.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        atomic_write_json(run_dir / "config.json", {
            "config": asdict(cfg), "model": model_kwargs(cfg),
            "dataset_hash": trainer.data.dataset_hash,
            "text_encoder_hash": trainer.data.text_encoder_hash,
            "embeddings_key": trainer.data.embeddings_key,
            "caption_scheme": None if cfg.fake_data else "names-x-colours-x2",
            "params": {name: sum(p.numel() for p in getattr(trainer, name).parameters())
                       for name in ("G", "D") if hasattr(trainer, name)},
            "environment": environment()}, sort_keys=True)
    return trainer.run(run_dir)
