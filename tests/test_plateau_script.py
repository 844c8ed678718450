"""benchmarks/plateau.py: the schedule it trains and its plateau rule (hand-made curves; the
real measurement is reports/studies/plateau*/)."""
import copy

from _helpers import load_script


def _plateau():
    return load_script("benchmarks/plateau.py")


def test_schedule_constant_lr_or_the_given_lr_steps(params):
    plateau = _plateau()
    flat = plateau.constant_lr(copy.deepcopy(params), "study", 30, 2)
    stepped = plateau.constant_lr(copy.deepcopy(params), "study", 16, 1, [11, 13])
    for p, epochs, steps, val in ((flat, 30, [30], 2), (stepped, 16, [11, 13], 1)):
        prof = p["profiles"]["study"]
        assert prof["train"]["val_interval"] == val
        for per_dataset in prof["schedule"].values():
            for entry in per_dataset.values():
                assert entry["epochs"] == epochs and entry["milestones"] == steps
                assert "teacher" not in entry      # the teacher trains the same schedule


def test_plateau_is_where_every_later_pair_is_within_the_tolerance():
    rule = _plateau().plateau_epoch
    epochs, maps = [2, 4, 6, 8, 10], [0.10, 0.30, 0.305, 0.35, 0.355]
    assert rule(epochs, maps, 1.0) == 10                  # 6 is close, but 8 jumps again
    assert rule(epochs, maps, 1.0, stable=False) == 6
    assert rule(epochs, [0.1, 0.2, 0.3, 0.4, 0.5], 1.0) is None
    assert rule([1, 2, 3], [0.5, None, 0.504], 1.0) == 3   # skipped evaluations
