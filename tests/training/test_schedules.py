"""The optax schedule equals the reference's recursive CosineAnnealingLR_Restart at every step."""

import math

import numpy as np
import pytest

from kernelspace_jax.training.schedules import cosine_annealing_restarts


def reference_lrs(base_lr, periods, restarts, weights, eta_min, num_steps):
    """The reference scheduler's recursion (models/lr_scheduler.py), stepped once before each update."""
    shifted = [r + 1 for r in restarts]
    lr, last_restart, t_max, out = base_lr, 0, periods[0], []
    for epoch in range(1, num_steps + 1):
        if epoch in shifted:
            last_restart, i = epoch, shifted.index(epoch)
            t_max, lr = periods[i + 1], base_lr * weights[i]
        elif (epoch - last_restart - 1 - t_max) % (2 * t_max) == 0:
            lr = lr + (base_lr - eta_min) * (1 - math.cos(math.pi / t_max)) / 2
        else:
            e = epoch - last_restart
            lr = (1 + math.cos(math.pi * e / t_max)) / (1 + math.cos(math.pi * (e - 1) / t_max)) * (lr - eta_min)
            lr += eta_min
        out.append(lr)
    return np.asarray(out)


@pytest.mark.parametrize(
    ("periods", "restarts", "weights", "eta_min"),
    [((10, 20, 30), (10, 30), (1.0, 1.0), 1e-6), ((8, 8), (8,), (0.5,), 1e-8), ((50,), (), (), 0.0)],
)
def test_every_step_of_small_schedules(periods, restarts, weights, eta_min):
    steps = sum(periods)
    expected = reference_lrs(1e-4, periods, restarts, weights, eta_min, steps)
    schedule = cosine_annealing_restarts(1e-4, periods, restarts, weights, eta_min)
    got = np.asarray([schedule(count) for count in range(steps)])
    np.testing.assert_allclose(got, expected, rtol=2e-5, atol=1e-11)


def test_reference_recipe_at_the_restart_boundaries():
    periods, restarts = (50_000, 100_000, 150_000, 150_000, 150_000), (50_000, 150_000, 300_000, 450_000)
    expected = reference_lrs(1e-4, periods, restarts, (1, 1, 1, 1), 1e-6, 600_000)
    schedule = cosine_annealing_restarts(1e-4, periods, restarts, (1, 1, 1, 1), 1e-6)
    for boundary in (0, *restarts, 599_999):
        for count in range(max(0, boundary - 2), min(600_000, boundary + 3)):
            np.testing.assert_allclose(schedule(count), expected[count], rtol=1e-4, err_msg=str(count))
    assert float(schedule(49_999)) == pytest.approx(1e-6, rel=1e-3)  # bottom of the first period
    assert float(schedule(50_000)) == pytest.approx(1e-4)  # restarted


def test_mismatched_lists_are_rejected():
    with pytest.raises(ValueError, match="weights"):
        cosine_annealing_restarts(1e-4, (10, 10), (10,), (1.0, 1.0))
