"""``dipkd doctor``: a few minutes that exercise, on the given device, everything a training
run touches, before GPU-days go into the paper profile. One line per check (PASS, FAIL or
SKIP, with its detail) on the console, the same as a markdown table in ``--out``; exit code 0
only when nothing FAILED.

The checks, in order (``--checks`` groups):

- ``env`` (:mod:`.environment`): versions and GPUs; mmcv's ``nms`` and ``RoIAlign`` (forward
  and backward) on the device against the CPU and torchvision;
- ``sns``, ``kd`` (:mod:`.method`): SNS and every registered KD loss on the device against
  the CPU's numbers (same inputs, weights and random masks);
- ``train`` (:mod:`.train_step`): one training step of every run of the profile's matrix at
  its input size and batch, with time and peak memory; on CUDA whether batch 8 fits;
- ``weights`` (:mod:`.weights`): the ImageNet backbone files there (or downloadable) and
  loading key for key;
- ``data`` (:mod:`.data`): every configured dataset's layout.

Independent of DVC and MLflow: nothing here imports them, so the doctor runs on a bare GPU
node with only the training stack (tests/test_doctor.py runs it with both blocked).
"""
from .command import main, run_doctor

__all__ = ["main", "run_doctor"]
