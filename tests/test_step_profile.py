"""benchmarks/step_profile.py: the iteration clock's arithmetic on hand-made timings and the
report's ratios (the measurement itself: `python benchmarks/step_profile.py --out ...`)."""
import pytest

from _helpers import load_script


@pytest.fixture(scope="module")
def sp():
    return load_script("benchmarks/step_profile.py")


def test_iteration_clock_counts_every_iteration_and_data_loading(sp):
    clock = sp._IterClock()
    # epoch 0: three iterations of 1.0, 1.0 and 2.0 s (a hook acting on the last one), data
    # loading 0.5 s between them; then a 10 s epoch end (checkpoint, validation) and the
    # data of epoch 1's first batch (0.5 s), one iteration of 1.0 s
    clock.iters = [(0, 0.0, 1.0), (0, 1.5, 2.5), (0, 3.0, 5.0), (1, 15.5, 16.5)]
    out = clock.summary()
    assert out["data"] == pytest.approx(0.5)
    assert out["iteration"] == pytest.approx((1 + 1 + 2 + 1) / 4 + 0.5)
    assert out["epoch_end"] == pytest.approx(10.0)
    assert out["iterations"] == 4 and out["epochs"] == 2


def test_report_ratios(sp):
    runner = {"iteration": 0.55, "data": 0.01, "iterations": 12, "epochs": 2,
              "epoch_end": 3.0, "total": 20.0}
    results = {"smoke": {
        "student": {"alone": {"step": 0.4}, "nondeterministic": {"step": 0.4},
                    "runner": dict(runner, iteration=0.44), "profile": {"step (all)": 0.4},
                    "flops": {"step": 30e9}},
        "dipkd": {"alone": {"step": 0.6, "teacher_forward": 0.1},
                  "nondeterministic": {"step": 0.5}, "runner": runner,
                  "profile": {"step (all)": 0.6, "conv forward GFLOP/s": 200.0},
                  "flops": {"step": 45e9, "teacher_forward": 6e9}}}}
    text = sp.report(results, 250.0)
    assert "| smoke | student | 0.400 | 0.440 | 1.10x | 1.00x |  |  | 30.0 |" in text
    # 0.6 / (0.4 + 0.1) = 1.20; runner 0.55 / 0.6 = 0.92; deterministic 0.6 / 0.5 = 1.20;
    # FLOPs 45 / (30 + 6) = 1.25
    assert "| smoke | dipkd | 0.600 | 0.550 | 0.92x | 1.20x | 1.20x | 1.25x | 45.0 |" in text
    # train() 20 s: 12 x 0.55 = 6.6 in iterations, 2 x 3 = 6 in epoch ends, 7.4 the rest
    assert "| 20: 7 / 6 / 7 |" in text
    assert "| conv forward GFLOP/s | 200 |" in text and "250 GFLOP/s" in text


def test_step_flops_counts_the_teacher_forward_apart(sp, params):
    """The FLOP floor of a real smoke step: a distillation counts its teacher's forward apart,
    and DIPKD without the generation block does less arithmetic than with it."""
    params["profile"] = "smoke"
    with sp.scratch_workspace(params, "smoke"):
        student = sp.step_flops(params, "student")
        dipkd = sp.step_flops(params, "dipkd")
        eq12 = sp.step_flops(params, "dipkd_eq12")
    assert "teacher_forward" not in student and dipkd["teacher_forward"] > 0
    # the teacher's forward (R50) runs inside the distillation step
    assert dipkd["step"] > student["step"] + dipkd["teacher_forward"]
    assert student["step"] + eq12["teacher_forward"] <= eq12["step"] < dipkd["step"]
