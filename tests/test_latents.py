import numpy as np
import pytest

from adgen.latents import SeedError, derive_seed, seed_to_z, seeds_to_z, splitmix64

# Golden values: if these change, every (prompt, seed) -> image mapping changes. Never edit
# them to make a test pass.
GOLDEN_SPLITMIX_0 = [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
GOLDEN_Z_SEED_0 = [-0.45275775, 0.20776604, 2.650606, -0.49042282]


def test_splitmix64_matches_reference_stream():
    # Reference values of SplitMix64 seeded with 0 (Vigna's reference implementation).
    assert [int(x) for x in splitmix64(0, 3)] == GOLDEN_SPLITMIX_0


def test_seed_to_z_golden_values():
    z = seed_to_z(0, 128)
    assert z.dtype == np.float32 and z.shape == (128,)
    np.testing.assert_array_equal(z[:4], np.array(GOLDEN_Z_SEED_0, dtype=np.float32))


def test_seed_to_z_is_deterministic_and_distinct():
    a, b = seed_to_z(123, 100), seed_to_z(123, 100)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(seed_to_z(124, 100), a)
    # A shorter z is a prefix of a longer one (odd dims included).
    np.testing.assert_array_equal(seed_to_z(7, 101)[:100], seed_to_z(7, 100))


def test_latents_are_standard_normal():
    z = seeds_to_z(list(range(1000)), 128)
    assert abs(float(z.mean())) < 0.02
    assert abs(float(z.std()) - 1.0) < 0.02


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "3", True, None])
def test_bad_seeds_raise_clear_error(bad):
    with pytest.raises(SeedError, match="seed"):
        seed_to_z(bad)


def test_max_seed_is_accepted():
    assert np.isfinite(seed_to_z(2**63 - 1)).all()


def test_derived_seeds_are_stable_and_in_range():
    s = derive_seed(0, "line-1", 0)
    assert s == derive_seed(0, "line-1", 0)
    assert len({derive_seed(0, "line-1", k) for k in range(100)}) == 100
    assert derive_seed(1, "line-1", 0) != s
    assert 0 <= s < 2**63
