"""The study report's KD-term table (dipkd.reports.kd_grad_summary) from a real MLflow store:
per-run means over the probes, then mean/min/max over the runs; detection terms left out."""
import mlflow
import pytest

from dipkd.reports.kd_grad_summary import ratios, section


@pytest.fixture
def store(tmp_path):
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    exp = client.create_experiment("x", artifact_location=(tmp_path / "a").as_uri())

    def run(tags, history):
        r = client.create_run(exp, tags=tags)
        for key, values in history.items():
            for step, v in enumerate(values):
                client.log_metric(r.info.run_id, key, v, step=step)

    dipkd = {"study": "s", "role": "distilled", "method": "dipkd"}
    run(dipkd, {"kd_grad_ratio/loss_kd_tar": [0.2, 0.4], "kd_grad_ratio/loss_cls": [0.5],
                "kd_grad_ratio/loss_rit": [1e-7, 3e-7], "kd_grad/loss_kd_tar": [9.0]})
    run(dipkd, {"kd_grad_ratio/loss_kd_tar": [0.6], "kd_grad_ratio/loss_rit": [2e-7]})
    run(dict(dipkd, variant="inheritfalse"), {"kd_grad_ratio/loss_kd_tar": [0.1]})
    run({"study": "s", "role": "student"}, {"kd_grad_ratio/loss_kd_tar": [5.0]})
    run(dict(dipkd, study="other"), {"kd_grad_ratio/loss_kd_tar": [5.0]})
    return client, [exp]


def test_ratios_average_probes_then_runs(store):
    client, exps = store
    found = ratios(client, exps, "s")
    assert set(found) == {("dipkd", ""), ("dipkd", "inheritfalse")}
    assert sorted(found[("dipkd", "")]["loss_kd_tar"]) == pytest.approx([0.3, 0.6])
    assert "loss_cls" not in found[("dipkd", "")]           # a detection loss: the reference
    assert sorted(found[("dipkd", "")]["loss_rit"]) == pytest.approx([2e-7, 2e-7])


def test_section_marks_inert_terms(store):
    client, exps = store
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in section(client, exps, "s").splitlines() if line.startswith("| ")]
    assert ["dipkd", "`loss_kd_tar`", "2", "0.45", "0.3 - 0.6", ""] in cells
    assert ["dipkd", "`loss_rit`", "2", "2e-07", "2e-07 - 2e-07", "inert"] in cells
    assert ["dipkd (inheritfalse)", "`loss_kd_tar`", "1", "0.1", "0.1 - 0.1", ""] in cells
    # no probes recorded for that study here: the section says why instead of vanishing
    empty = section(client, exps, "nothing")
    assert "| " not in empty and "restored from its cache" in empty
