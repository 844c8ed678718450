"""The adaptation layer f_adp / f of DIPKD Eq. 2 and 11: a 1x1 conv when the student's and
teacher's channel counts differ, identity otherwise (both FPNs have 256 channels here)."""
from torch import nn


def build_adapter(student_channels: int, teacher_channels: int) -> nn.Module:
    if student_channels == teacher_channels:
        return nn.Identity()
    return nn.Conv2d(student_channels, teacher_channels, kernel_size=1)
