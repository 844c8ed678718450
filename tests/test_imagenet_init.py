"""ImageNet backbone weights really reach the paper profile's detectors (offline).

torchvision-format ResNet-18/50 state dicts with random values are put where the project
fetches the ImageNet weights (torch's hub cache under ``TORCH_HOME``,
:func:`dipkd.models.pretrained.ensure_pretrained`); the paper profile's teacher (R50),
student (R18) and distilled student are built from their configs as training builds them
and initialised (``init_weights``, what mmengine's runner calls). Every tensor of each
backbone must then equal the file's tensor of the same name (mmdet's ResNet names its
layers as torchvision does: conv1, bn1, layer1.0.conv1, ..., downsample.0/1; torchvision's
``fc`` is the only thing left over). A key mismatch, a wrong checkpoint URL or cache
location, or an init that overwrites the loaded weights leaves some tensor random and fails.

The file's values are random but deliberately unlike any initialisation (BN weights, biases
and running statistics are not 1/0, ``num_batches_tracked`` is not 0), so a tensor that was
never loaded cannot match by accident.
"""
import pytest
import torch
import torchvision


def _random_torchvision_state(depth: int, seed: int) -> dict:
    model = getattr(torchvision.models, f"resnet{depth}")(weights=None)
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            state[name] = torch.rand(value.shape, generator=gen, dtype=value.dtype) + 0.5
        else:                                       # num_batches_tracked
            state[name] = torch.full_like(value, 1000 + seed)
    return state


@pytest.fixture
def imagenet_files(tmp_path, monkeypatch):
    """Random torchvision ResNet-18/50 files where ``ensure_pretrained`` (and through it
    mmengine's ``torchvision://`` loader) looks; no network."""
    from dipkd.models.pretrained import cached_path, ensure_pretrained, weights_url
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(url, *_args, **_kwargs):
        raise AssertionError(f"tried to download {url}")
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    states = {}
    for depth, seed in ((18, 1), (50, 2)):
        path = cached_path(weights_url(depth))
        assert str(path).startswith(str(tmp_path / "torch"))
        path.parent.mkdir(parents=True, exist_ok=True)
        states[depth] = _random_torchvision_state(depth, seed)
        torch.save(states[depth], path)
        assert ensure_pretrained(depth) == path     # the training stage's check: cached
    return states


def _paper_params(params, detector):
    params["profile"] = "paper"
    params["datasets"], params["detectors"] = ["ssdd"], [detector]
    return params


def _assert_backbone_is(backbone, state: dict, what: str):
    own = backbone.state_dict()
    assert set(own) <= set(state), f"{what}: names not in the torchvision file: " \
        f"{sorted(set(own) - set(state))[:5]}"
    assert set(state) - set(own) == {"fc.weight", "fc.bias"}, what
    different = [k for k, v in own.items() if not torch.equal(v, state[k])]
    assert not different, f"{what}: {len(different)} of {len(own)} backbone tensors are " \
        f"not the ImageNet file's, e.g. {different[:5]}"


@pytest.mark.parametrize("detector", ["faster_rcnn", "retinanet"])
def test_paper_teacher_and_student_backbones_load_imagenet_weights(imagenet_files, params,
                                                                   detector):
    from mmengine.config import ConfigDict
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd import mmdet_plugins  # noqa: F401  (registries, checkpoint loader)
    from dipkd.config.params import run_spec
    from dipkd.mmdet_config import build_config

    register_all_modules()
    params = _paper_params(params, detector)
    for role, depth in (("teacher", 50), ("student", 18)):
        spec = run_spec(params, role, "ssdd", detector)
        assert spec.train.pretrained and spec.depth == depth
        cfg = build_config(spec)
        model = MODELS.build(ConfigDict(cfg.model.to_dict()))
        before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
        model.init_weights()
        _assert_backbone_is(model.backbone, imagenet_files[depth], f"{role} R{depth}")
        # and the load did change the freshly built (random) backbone
        assert not torch.equal(before["conv1.weight"], model.backbone.state_dict()["conv1.weight"])


def test_paper_distilled_student_backbone_loads_imagenet_weights(imagenet_files, params):
    """The student inside the DIPKD distiller (inheriting the teacher's neck and heads) still
    starts from the ImageNet R18: inheritance must not touch the backbone."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from dipkd import mmdet_plugins  # noqa: F401
    from dipkd.config.params import distill_spec, run_spec
    from dipkd.mmdet_config import build_distill_config

    register_all_modules()
    params = _paper_params(params, "retinanet")
    spec = distill_spec(params, "dipkd", "ssdd", "retinanet")
    cfg = build_distill_config(spec, run_spec(params, "teacher", "ssdd", "retinanet"), None)
    model = MODELS.build(cfg.model)
    model.init_weights()
    _assert_backbone_is(model.student.backbone, imagenet_files[18], "distilled student R18")
