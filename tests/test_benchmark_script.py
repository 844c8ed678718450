"""The benchmark script runs and reports every method relative to FitNet (tiny sizes; the
real measurement is `python benchmarks/bench_kd.py --out reports/benchmarks.md`)."""
from _helpers import REPO, load_script


def _bench():
    return load_script("benchmarks/bench_kd.py")


def test_benchmark_reports_each_method_against_fitnet(monkeypatch):
    monkeypatch.chdir(REPO)
    bench = _bench()
    step = bench.bench_step(repeats=1, size=64, methods=["fitnet", "frs", "dipkd"])
    assert set(step) == {"fitnet", "frs", "dipkd"} and all(v > 0 for v in step.values())
    measured = bench.bench_wavelet(repeats=1)
    assert {"kernel_s", "torch_s", "numpy_s", "speedup", "torch_speedup"} <= set(measured)
    assert all(v > 0 for v in measured.values())
    wave = {"kernel_s": 0.1, "torch_s": 0.25, "numpy_s": 1.0, "speedup": 10.0,
            "torch_speedup": 4.0}
    text = bench.report(wave, step, "faster_rcnn", 64)
    assert "fused CPU kernel 0.100 s | PyWavelets/numpy 1.000 s | 10.0x faster | >= 10x |" in text
    assert "| torch 0.250 s | PyWavelets/numpy 1.000 s | 4.0x faster | |" in text
    assert "| frs |" in text and "| fitnet |" in text and "1.00x" in text
    assert "per step | <= +10% |" in text
    assert f"threads, torch {bench.torch.__version__}, numba " in text  # when and where
    pairs = {"faster_rcnn": {"fitnet": 2.0, "dipkd": 2.1},
             "retinanet": {"fitnet": 1.0, "dipkd": 1.05}}
    both = bench.report(wave, step, "faster_rcnn", 64, pairs)
    assert "| distiller train step, retinanet R50->R18, batch 2 at 64x64 | DIPKD 1.050 s | " \
           "Eq. 2 MSE 1.000 s | +5.0% per step |" in both
    assert "DIPKD 2.100 s | Eq. 2 MSE 2.000 s | +5.0% per step" in both  # the pair, not step
