"""Seed -> latent z, identical on every client and numpy version.

numpy's Generator streams and its normal sampler may change between releases, so the
latents come from our own SplitMix64 bit stream (pure uint64 arithmetic, fully specified)
turned into standard normals with the Box-Muller transform. Same seed -> same z, whoever
computes it (a test pins golden values).
"""
from __future__ import annotations

import hashlib
import struct

import numpy as np

from adgen.contract import DEFAULT_Z_DIM, MAX_SEED
from adgen.errors import AdgenError

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


class SeedError(AdgenError, ValueError):
    """A seed outside [0, 2**63 - 1] or not an integer."""


def check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SeedError(f"seed must be an integer, got {type(seed).__name__}")
    seed = int(seed)
    if seed < 0 or seed > MAX_SEED:
        raise SeedError(f"seed must be in [0, 2**63-1], got {seed}")
    return seed


def splitmix64(seed: int, count: int) -> np.ndarray:
    """The first `count` outputs of SplitMix64 started at `seed`: uint64[count]."""
    with np.errstate(over="ignore"):
        state = np.uint64(seed) + _GOLDEN * np.arange(1, count + 1, dtype=np.uint64)
        z = state
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
        return z ^ (z >> np.uint64(31))


def seed_to_z(seed: int, z_dim: int = DEFAULT_Z_DIM) -> np.ndarray:
    """One seed -> float32[z_dim] standard normals."""
    seed = check_seed(seed)
    pairs = (z_dim + 1) // 2
    bits = splitmix64(seed, 2 * pairs)
    # 53-bit uniforms in (0, 1): the +0.5 keeps log() away from 0.
    u = ((bits >> np.uint64(11)).astype(np.float64) + 0.5) * (1.0 / 9007199254740992.0)
    u1, u2 = u[0::2], u[1::2]
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = 2.0 * np.pi * u2
    normals = np.empty(2 * pairs, dtype=np.float64)
    normals[0::2] = radius * np.cos(angle)
    normals[1::2] = radius * np.sin(angle)
    return normals[:z_dim].astype(np.float32)


def seeds_to_z(seeds, z_dim: int = DEFAULT_Z_DIM) -> np.ndarray:
    """Many seeds -> float32[N, z_dim]."""
    seeds = list(np.asarray(seeds).reshape(-1).tolist()) if not isinstance(seeds, list) else seeds
    out = np.empty((len(seeds), z_dim), dtype=np.float32)
    for i, s in enumerate(seeds):
        out[i] = seed_to_z(s, z_dim)
    return out


def derive_seed(base_seed: int, item_id: str, k: int) -> int:
    """The seed of image k of prompt `item_id` in a job started with `base_seed`.

    A hash, so ids and k never collide and resharding a job keeps every image's seed.
    """
    base_seed = check_seed(base_seed)
    digest = hashlib.sha256(f"{base_seed}\x1f{item_id}\x1f{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & MAX_SEED


def derive_seeds(base_seed: int, item_id: str, n: int) -> list[int]:
    """[derive_seed(base_seed, item_id, k) for k in range(n)], with the checks and the
    common prefix done once (a resume derives every planned image's seed)."""
    prefix = f"{check_seed(base_seed)}\x1f{item_id}\x1f".encode()
    sha256, first8 = hashlib.sha256, _U64.unpack_from
    ks = _K_BYTES if n <= len(_K_BYTES) else [str(k).encode() for k in range(n)]
    return [first8(sha256(prefix + ks[k]).digest())[0] & MAX_SEED for k in range(n)]


_U64 = struct.Struct(">Q")  # the digest's first 8 bytes, big-endian, as derive_seed reads them
_K_BYTES = [str(k).encode() for k in range(1025)]  # k as derive_seed writes it, k <= MAX_N
