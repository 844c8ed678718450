"""The paper's effects against a study's resolution (dipkd.reports.resolution), on hand-made
tables: each effect's paper difference from paper_values.yaml, its half-width from the CSVs."""
import math

import pandas as pd
import pytest

from dipkd.reports.resolution import Effect, effects, paper_map, section

PARAMS = {"baselines": ["inherit_only", "fgd", "mgd"],
          "ablation": {"dataset": "ssdd", "detector": "faster_rcnn",
                       "modules": ["sns", "kld_rit", "sns_kld"]}}


def _compare(rows):
    cols = ["Dataset", "Detector", "a", "b", "mAP_delta", "mAP_ci_low", "mAP_ci_high",
            "mAP_half_width"]
    return pd.DataFrame([dict(zip(cols, ("ssdd", "faster_rcnn", *r))) for r in rows])


@pytest.fixture
def folder(tmp_path):
    _compare([("dipkd", "student", 5.0, 3.0, 7.0, 2.0),
              ("inherit_only", "student", 3.0, 1.5, 4.5, 1.5),
              ("dipkd", "fgd", 0.5, -1.0, 2.0, 1.5),
              ("dipkd", "inherit_only", 2.0, 1.2, 2.8, 0.8),
              ("dipkd", "dipkd-kld_rit", 0.3, -0.7, 1.3, 1.0)]).to_csv(
        tmp_path / "compare.csv", index=False)
    pd.DataFrame([{"SNS": "-", "KLD": "-", "RIT": "-", "mAP": 50.0},
                  {"SNS": "✓", "KLD": "-", "RIT": "-", "mAP": 53.0, "mAP_delta": 3.0,
                   "mAP_ci_low": 0.0, "mAP_ci_high": 6.0},
                  {"SNS": "-", "KLD": "✓", "RIT": "✓", "mAP": 54.0, "mAP_delta": 4.0,
                   "mAP_ci_low": 1.0, "mAP_ci_high": 7.0},
                  {"SNS": "✓", "KLD": "✓", "RIT": "✓", "mAP": 55.0, "mAP_delta": 5.0,
                   "mAP_ci_low": 3.0, "mAP_ci_high": 7.0}]).to_csv(
        tmp_path / "table3.csv", index=False)
    return tmp_path


def test_paper_map_reads_the_published_tables():
    assert paper_map("student", "ssdd", "faster_rcnn") == 57.4
    assert paper_map("dipkd", "hrsid", "retinanet") == 50.6
    assert paper_map("fgd", "hrsid", "faster_rcnn") == 57.1        # Table 2, HRSID column
    assert paper_map("fgd", "ssdd", "retinanet") is None            # Table 2 is Faster R-CNN
    assert paper_map("dipkd-sns_rit", "ssdd", "faster_rcnn") == 60.1  # Table 3 "1 0 1"
    assert paper_map("dipkd-inheritfalse", "ssdd", "faster_rcnn") is None
    assert paper_map("inherit_only", "ssdd", "faster_rcnn") is None


def test_effects_pair_paper_differences_with_measured_half_widths(folder):
    found = {e.claim: e for e in effects(PARAMS, folder)}
    dipkd = found["DIPKD - Student (SSDD, Faster R-CNN)"]
    assert dipkd.paper == pytest.approx(60.2 - 57.4) and dipkd.half_width == 2.0
    assert dipkd.visible == "yes" and dipkd.measured == "+5.0 [+3.0, +7.0]"
    fgd = found["DIPKD - FGD (SSDD, Faster R-CNN)"]
    assert fgd.paper == pytest.approx(60.2 - 56.5) and fgd.visible == "yes"
    adds = found["DIPKD - DIPKD (KLD+RIT only) (SSDD, Faster R-CNN)"]   # what SNS adds
    assert adds.paper == pytest.approx(60.2 - 59.8) and adds.visible == "no"
    sns = found["DIPKD (SNS only) - Student (Table 3)"]                  # from table3.csv
    assert sns.paper == pytest.approx(59.4 - 57.4) and sns.half_width == 3.0
    assert sns.visible == "no"
    # DIPKD vs student and KLD+RIT vs student: not repeated from Table 3 when compared
    assert sum("DIPKD - Student" in c for c in found) == 1
    # no paper value: the inherit-only control gives no paper effect
    assert not any("Inherit" in c or "inherit" in c for c in found)
    # not run as pairs: DIPKD vs MGD, vs SNS+KLD; Tables 4-5: estimated from the narrowest
    # half-width between two distilled models (0.8: DIPKD vs inherit-only)
    mgd = found["DIPKD - MGD (Table 2, SSDD; not run as a pair)"]
    assert mgd.estimated and mgd.half_width == 0.8 and mgd.paper == pytest.approx(2.1)
    assert mgd.visible == "yes (est.)"
    assert "DIPKD - DIPKD (SNS+KLD only) (Table 3; not run as a pair)" in found
    assert "DIPKD - DIPKD (SNS+RIT only) (Table 3; not run as a pair)" not in found  # not run
    tau = found["tau: largest - smallest mAP (Table 4)"]
    assert tau.paper == pytest.approx(60.2 - 59.8) and tau.visible == "no (est.)"
    assert found["mask rate: largest - smallest mAP (Table 5)"].paper == pytest.approx(0.5)
    assert found["mask rate 0.25 - 1.0 (Table 5)"].paper == pytest.approx(2.1)


def test_section_renders_signed_differences(folder):
    text = section(PARAMS, folder)
    cells = [[c.strip() for c in line.strip("|").split("|")]
             for line in text.splitlines() if line.startswith("| ")]
    assert ["DIPKD - Student (SSDD, Faster R-CNN)", "+2.8", "+5.0 [+3.0, +7.0]", "±2.0",
            "yes"] in cells
    assert ["tau: largest - smallest mAP (Table 4)", "+0.4", "not run", "~±0.8",
            "no (est.)"] in cells


def test_nothing_measured_gives_no_half_width(tmp_path):
    rows = effects({"baselines": []}, tmp_path)          # no CSVs at all
    assert rows and all(not math.isfinite(e.half_width) for e in rows)
    assert {e.visible for e in rows} == {"-"}
    assert Effect("x", 1.0, 2.0).visible == "no" and Effect("x", -3.0, 2.0).visible == "yes"
