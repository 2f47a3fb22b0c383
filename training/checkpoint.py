"""Generator checkpoints: safetensors weights + config.json, never pickles.

A checkpoint is a folder:
  generator.safetensors   the (EMA) generator state dict
  config.json             {"format_version": 1, "kind": "adgen-generator", "arch": ...,
                           "model": {constructor kwargs}, "dataset_hash", "text_encoder_hash",
                           "training": {...}}
``save_generator`` writes both into a temp folder and renames it into place
(write_checkpoint), so a reader never sees half a checkpoint. ``load_generator`` is the one
way to load a generator: it validates the file (size, header, dtype) and the config against
the weights, and raises CheckpointError with a one-line message on anything wrong.
"""
from __future__ import annotations

import contextlib
import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save, save_file
from torch import nn

from adgen.atomic import atomic_dir, atomic_write
from adgen.errors import AdgenError
from adgen.paths import sha256_file
from adgen.training.networks import NetworkError, build_generator

FORMAT_VERSION = 1
KIND = "adgen-generator"
WEIGHTS_NAME = "generator.safetensors"
CONFIG_NAME = "config.json"
PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".bin")
MAX_HEADER_BYTES = 100 * 1024 * 1024


class CheckpointError(AdgenError):
    """A checkpoint that cannot be written or safely loaded."""


@dataclass(frozen=True)
class LoadedGenerator:
    module: nn.Module  # in eval mode
    config: dict
    path: Path         # the checkpoint folder
    sha256: str        # of generator.safetensors
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def z_dim(self) -> int:
        return int(self.config["model"]["z_dim"])

    @property
    def arch(self) -> str:
        return self.config["arch"]


def write_checkpoint(out_dir, state: dict, config: dict, weights_name: str = WEIGHTS_NAME,
                     metadata: dict[str, str] | None = None) -> Path:
    """out_dir/<weights_name> (safetensors) + out_dir/config.json, swapped in as one folder
    (adgen.atomic.atomic_dir), so a reader never sees half a checkpoint and an old one is
    replaced only by a complete one; returns out_dir."""
    out_dir = Path(out_dir)
    with contextlib.ExitStack() as stack:
        try:
            tmp = stack.enter_context(atomic_dir(out_dir))
        except OSError as exc:  # the parent cannot be made or written: one line for the user
            raise CheckpointError(f"cannot write checkpoint to {out_dir}: {exc.strerror}") from None
        save_file(state, str(tmp / weights_name), metadata=metadata)
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return out_dir


def generator_config(module: nn.Module, config: dict | None = None) -> dict:
    """The full config.json for `module`: format fields + arch/model from the module."""
    config = dict(config or {})
    arch = config.get("arch", getattr(module, "arch", None))
    model = config.get("model", getattr(module, "model_kwargs", None))
    if arch is None or model is None:
        raise CheckpointError("generator config needs 'arch' and 'model' (constructor kwargs); "
                              "build the module with adgen.training.networks.build_generator")
    out = {"format_version": FORMAT_VERSION, "kind": KIND, "arch": arch, "model": dict(model),
           "dataset_hash": config.get("dataset_hash"),
           "text_encoder_hash": config.get("text_encoder_hash"),
           "training": config.get("training", {})}
    for key, value in config.items():  # keep any extra top-level fields
        out.setdefault(key, value)
    return out


def save_generator(module: nn.Module, config: dict, out_dir) -> Path:
    """Writes out_dir/generator.safetensors + out_dir/config.json atomically; returns out_dir."""
    full = generator_config(module, config)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    return write_checkpoint(out_dir, state, full, metadata={
        "format_version": str(FORMAT_VERSION), "kind": KIND, "arch": full["arch"]})


def resolve_weights(path, weights_name: str = WEIGHTS_NAME) -> tuple[Path, Path]:
    """path (folder or .safetensors file) -> (weights file, config file)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(f"{path.name}: pickled checkpoints are not loaded (unsafe); "
                              "convert to safetensors + config.json")
    if path.is_dir():
        weights = path / weights_name
    elif path.suffix == ".safetensors":
        weights = path
    elif not path.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    else:
        raise CheckpointError(f"{path.name}: expected a checkpoint folder or a .safetensors file")
    if not weights.is_file():
        raise CheckpointError(f"no {weights_name} in {weights.parent}")
    config = weights.parent / CONFIG_NAME
    if not config.is_file():
        raise CheckpointError(f"no {CONFIG_NAME} beside {weights.name} in {weights.parent}")
    return weights, config


def check_safetensors_file(path: Path) -> dict:
    """Validates the safetensors framing without trusting it; returns the parsed header."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05") or head[:4] == b"PK\x03\x04":
            raise CheckpointError(f"{path.name} is a pickle / torch.save file, not safetensors; "
                                  "refusing to unpickle")
        if len(head) < 8:
            raise CheckpointError(f"{path.name} is truncated ({size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise CheckpointError(f"{path.name} is truncated or not safetensors "
                                  f"(header says {n} bytes, file has {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path.name} has a corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path.name} has a corrupt safetensors header")
    end = max((v["data_offsets"][1] for k, v in header.items()
               if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v), default=0)
    if 8 + n + end != size:
        raise CheckpointError(f"{path.name} is truncated or padded: tensors end at byte "
                              f"{8 + n + end}, file has {size}")
    return header


def read_config(config_path: Path, kind: str = KIND) -> dict:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config_path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{config_path.name}: format_version {version!r} is not supported "
                              f"(this adgen reads {FORMAT_VERSION})")
    if config.get("kind") != kind:
        raise CheckpointError(f"{config_path.name}: kind {config.get('kind')!r} is not {kind!r}")
    if not isinstance(config.get("model"), dict) or not isinstance(config.get("arch"), str):
        raise CheckpointError(f"{config_path.name}: missing 'arch' or 'model'")
    return config


def load_generator(path, device: str = "cpu") -> LoadedGenerator:
    """Loads a generator checkpoint folder (or its .safetensors file) in eval mode."""
    weights, config_path = resolve_weights(path)
    check_safetensors_file(weights)
    config = read_config(config_path)
    try:
        module = build_generator(config["arch"], **config["model"])
    except (NetworkError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{config_path.name}: cannot build the generator: {exc}") from None
    try:
        state = load_file(str(weights), device=device)
    except (SafetensorError, OSError, RuntimeError) as exc:
        raise CheckpointError(f"{weights.name} cannot be read: {exc}") from None
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s) e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s) e.g. {unexpected[0]}")
        raise CheckpointError(f"{weights.name} does not match config.json "
                              f"({config['arch']}): " + "; ".join(parts))
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{weights.name} does not match config.json: {key} has shape "
                                  f"{tuple(state[key].shape)}, config implies {tuple(tensor.shape)}")
        if state[key].dtype != tensor.dtype:
            raise CheckpointError(f"{weights.name}: {key} has dtype {state[key].dtype}, "
                                  f"expected {tensor.dtype}")
    module.load_state_dict(state, strict=True)
    module.to(device).eval()
    return LoadedGenerator(module, config, weights.parent, sha256_file(weights))


# ------------------------------------------------------------- training state (for --resume)

def save_tensors(tensors: dict[str, torch.Tensor], meta: dict, path: Path) -> None:
    """Atomic safetensors file with a JSON metadata blob (training state for --resume)."""
    atomic_write(path, save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                            metadata={"meta": json.dumps(meta, sort_keys=True)}))


def optimizer_tensors(prefix: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat tensors `<prefix>.<index>.<name>`, for
    save_tensors (safetensors holds tensors only: a plain number becomes a 0-d tensor)."""
    out = {}
    for i, state in opt.state_dict()["state"].items():
        for name, value in state.items():
            out[f"{prefix}.{i}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return out


def load_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict) -> None:
    """Puts back what optimizer_tensors(prefix, opt) saved (hyper-parameters stay opt's)."""
    sd = opt.state_dict()
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = value
    sd["state"] = state
    opt.load_state_dict(sd)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}")
    check_safetensors_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("meta", "{}"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path.name} cannot be read: {exc}") from None
    return tensors, meta
