"""Training curves for `dvc plots` from mmengine's scalars.json, across a resumed run."""
import json

from dipkd.tracking.curves import training_curves, write_curves


def _scalars(path, records, cut_last_line=False):
    path.parent.mkdir(parents=True)
    text = "\n".join(json.dumps(r) for r in records) + "\n"
    path.write_text(text + ('{"loss": 9.0, "ep' if cut_last_line else ""))


def test_epochs_mean_loss_and_val_map_with_a_resume(tmp_path):
    # First process: epoch 1 complete with validation, epoch 2 cut by a kill.
    _scalars(tmp_path / "20261125_100000/vis_data/scalars.json", [
        {"loss": 2.0, "epoch": 1, "iter": 1, "step": 1},
        {"loss": 4.0, "epoch": 1, "iter": 2, "step": 2},
        {"coco/mAP": 0.1, "coco/AP50": 0.3, "step": 1},
        {"loss": 7.0, "epoch": 2, "iter": 3, "step": 3}], cut_last_line=True)
    # Resumed process: epoch 2 trained again from its start, validated.
    _scalars(tmp_path / "20261125_110000/vis_data/scalars.json", [
        {"loss": 1.0, "epoch": 2, "iter": 3, "step": 3},
        {"loss": 2.0, "epoch": 2, "iter": 4, "step": 4},
        {"coco/mAP": 0.25, "step": 2}])
    assert training_curves(tmp_path) == [{"epoch": 1, "loss": 3.0, "mAP": 0.1},
                                         {"epoch": 2, "loss": 1.5, "mAP": 0.25}]
    out = tmp_path / "plots" / "run.json"
    write_curves(tmp_path, out)
    assert json.loads(out.read_text())[1]["mAP"] == 0.25
    assert not list(out.parent.glob("*.tmp"))


def test_no_validation_epoch_has_no_map(tmp_path):
    _scalars(tmp_path / "t/vis_data/scalars.json", [{"loss": 2.0, "epoch": 1, "step": 1}])
    assert training_curves(tmp_path) == [{"epoch": 1, "loss": 2.0, "mAP": None}]
    assert training_curves(tmp_path / "missing") == []
