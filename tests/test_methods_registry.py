"""KD methods by registry (dipkd/kd/methods.py): each loss registered once with what the
tables say about it; a new method needs one module and one params entry."""
import pytest
from mmdet.registry import MODELS

from dipkd.mmdet_config import kd_loss_cfg
from dipkd.config.params import ParamsError, validate
from dipkd.kd.feature_kd import FeatureKDLoss
from dipkd.kd.methods import display_name, kd_methods, method_class


def test_every_configured_method_is_a_registered_class_that_describes_itself(params):
    methods = kd_methods()
    assert set(params["methods"]) <= set(methods)
    for name, entry in params["methods"].items():
        cls = method_class(name, params)
        assert cls is methods[name] and cls.__name__ == entry["type"] and cls.method == name
        assert cls.display_name and cls.venue and cls.reference, name
        assert MODELS.get(entry["type"]) is cls
    assert display_name("student") == "Student" and display_name("teacher") == "Teacher"
    assert display_name("fgd", params) == "FGD" and display_name("dipkd") == "DIPKD"
    assert [m for m in params["baselines"] if method_class(m).footnote] == [
        "inherit_only", "defeat", "frs", "arsd", "twa", "ifkd"]


def test_a_type_that_is_not_a_kd_loss_is_a_clear_error(params):
    params["methods"]["fgd"]["type"] = "ResNet"       # registered, but not a KD loss
    with pytest.raises(ValueError, match="methods.fgd.type 'ResNet' is not a registered KD"):
        method_class("fgd", params)
    params["methods"]["fgd"]["type"] = 3
    with pytest.raises(ParamsError, match="methods.fgd.type must name"):
        validate(params)
    del params["methods"]["fgd"]["type"]                # absent: the class registered as fgd
    assert method_class("fgd", params).__name__ == "FGDLoss"


@pytest.fixture
def dummy_method():
    """A new KD method, written as a user would: one decorated class."""
    @MODELS.register_module()
    class DummyKDLoss(FeatureKDLoss):
        method = "dummy"
        display_name = "Dummy"
        venue = "NoVenue26"
        reference = "a test"
        footnote = "exists only in a test"

        def __init__(self, weight: float = 1.0, num_levels: int = 4):
            super().__init__(num_levels=num_levels)
            self.weight = weight

        def forward(self, student_feats, teacher_feats, *args, **kwargs):
            return {"loss_dummy": self.weight * sum(
                ((s - t) ** 2).mean() for _, s, t in self.level_pairs(student_feats,
                                                                     teacher_feats))}
    yield DummyKDLoss
    MODELS.module_dict.pop("DummyKDLoss")


def test_a_new_method_is_one_class_and_one_params_entry(params, dummy_method, tmp_path):
    """With only the class above and a params.yaml entry: the distiller config, Table 2's
    row (name, venue, footnote) and the figures' name need nothing else."""
    from dipkd.reports.tables import table2
    params["methods"]["dummy"] = {"type": "DummyKDLoss", "weight": 2.0, "fpn_levels": [0, 1],
                                  "inherit": False}
    params["baselines"] = ["fgd", "dummy"]
    validate(params)
    cfg = kd_loss_cfg("dummy", params["methods"]["dummy"])
    assert cfg == {"type": "DummyKDLoss", "weight": 2.0, "num_levels": 2}
    assert isinstance(MODELS.build(cfg), dummy_method)
    from test_tables import _write
    params["datasets"] = ["ssdd"]
    for group in ("student", "distilled/fgd", "distilled/dummy", "distilled/dipkd"):
        _write(tmp_path, group, "ssdd-faster_rcnn", {"mAP": 0.5, "AP50": 0.9})
    rows = table2.collect(params, tmp_path / "metrics")
    labels = [(r.labels["Method"], r.labels["Ref"]) for r in rows]
    assert labels == [("Student", ""), ("FGD", "CVPR22"), ("Dummy*", "NoVenue26"),
                      ("DIPKD", "AAAI25")]
    table2.write_table2(rows, "header", params, out_dir=tmp_path)
    assert "\\* Dummy: exists only in a test." in (tmp_path / "table2.md").read_text()
    assert display_name("dummy") == "Dummy"

