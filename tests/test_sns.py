"""Attention maps (Eq. 3-6) by hand and SNS (Eq. 7) with the teacher's attention."""
import math

import pytest
import torch

from dipkd.kd.attention import channel_attention, spatial_attention
from dipkd.kd.sns import SelectiveNoiseSuppression
from dipkd.kd.wavelet import WaveletDenoiser

F = torch.tensor([[[[1.0, -2.0], [0.0, 3.0]], [[1.0, 0.0], [2.0, -1.0]]]])  # 1x2x2x2


def test_spatial_attention_by_hand():
    # V^S = mean_c |F| = [1, 1, 1, 2]; / tau(0.5) = [2, 2, 2, 4]
    z = 3 * math.exp(2) + math.exp(4)
    expected = [4 * math.exp(2) / z] * 3 + [4 * math.exp(4) / z]
    assert spatial_attention(F, 0.5).flatten().tolist() == pytest.approx(expected)


def test_channel_attention_by_hand():
    # V^C = mean_hw |F| = [1.5, 1.0]; / tau(0.5) = [3, 2]
    z = math.exp(3) + math.exp(2)
    expected = [2 * math.exp(3) / z, 2 * math.exp(2) / z]
    assert channel_attention(F, 0.5).flatten().tolist() == pytest.approx(expected)


def test_attention_sums_and_temperature():
    x = torch.randn(3, 5, 7, 9)
    assert spatial_attention(x, 0.5).sum(dim=(1, 2, 3)) == pytest.approx([63.0] * 3)
    assert channel_attention(x, 0.5).sum(dim=(1, 2, 3)) == pytest.approx([5.0] * 3)
    assert spatial_attention(x, 0.25).max() > spatial_attention(x, 1.0).max()


def test_sns_is_eq7_with_the_teachers_attention():
    sns = SelectiveNoiseSuppression(tau=0.5)
    teacher, student = torch.randn(2, 4, 9, 11), torch.randn(2, 4, 9, 11)
    out, a_s, a_c = sns(student, attention_source=teacher, return_attention=True)
    assert torch.allclose(a_s, spatial_attention(teacher, 0.5))
    assert torch.allclose(a_c, channel_attention(teacher, 0.5))
    expected = WaveletDenoiser("db1", 3, "std", 0.5)(a_c * a_s * student)
    assert torch.allclose(out, expected) and out.shape == student.shape
    # the weights come from the teacher: changing the student does not change them
    _, a_s2, a_c2 = sns(student * 3 + 1, attention_source=teacher, return_attention=True)
    assert torch.equal(a_s, a_s2) and torch.equal(a_c, a_c2)


def test_sns_gradient_reaches_the_student_not_the_attention_source():
    sns = SelectiveNoiseSuppression()
    student = torch.randn(1, 3, 8, 8, requires_grad=True)
    teacher = torch.randn(1, 3, 8, 8, requires_grad=True)
    sns(student, attention_source=teacher).sum().backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_attention_maps_is_both_maps_from_one_pass():
    from dipkd.kd.attention import attention_maps
    x = torch.randn(2, 5, 7, 9)
    a_s, a_c = attention_maps(x, 0.5)
    assert torch.equal(a_s, spatial_attention(x, 0.5))
    assert torch.equal(a_c, channel_attention(x, 0.5))


def test_purify_pair_is_eq7_on_both_with_the_teachers_attention():
    sns = SelectiveNoiseSuppression(tau=0.5)
    teacher = torch.randn(2, 4, 9, 11)
    student = torch.randn(2, 4, 9, 11, requires_grad=True)
    fs, ft, attention = sns.purify_pair(student, teacher, "eq7")
    assert attention is None
    assert torch.allclose(fs, sns(student, attention_source=teacher), atol=1e-6)
    assert torch.allclose(ft, sns(teacher, attention_source=teacher), atol=1e-6)
    assert fs.requires_grad and not ft.requires_grad
