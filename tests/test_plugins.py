"""Plugin folders (dipkd/plugins.py): a new KD method, table or real data source is one new
module in its folder; no other source file is edited, and the stages' code manifests
(dipkd/code_deps.py) list the new module."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dipkd.plugins import classes_defined_in, submodule_names

ROOT = Path(__file__).resolve().parents[1]

NEW_METHOD = '''
from mmdet.registry import MODELS

from ..kd.feature_kd import FeatureKDLoss


@MODELS.register_module()
class DummyKDLoss(FeatureKDLoss):
    method = "dummy"
    display_name = "Dummy"
    venue = "NoVenue26"
    reference = "a test"

    def forward(self, student_feats, teacher_feats, *args, **kwargs):
        return {"loss_dummy": sum(((s - t) ** 2).mean()
                                  for _, s, t in self.level_pairs(student_feats, teacher_feats))}
'''
METHOD_CHECK = """
import dipkd.baselines as b
from dipkd.kd.methods import kd_methods
assert 'DummyKDLoss' in b.__all__ and kd_methods()['dummy'] is b.DummyKDLoss
"""

NEW_TABLE = '''
from ..common import PaperTable

TABLE = PaperTable("table6", runs=lambda params: [], collect=lambda params: [],
                   write=lambda rows, head, params: None)
'''
TABLE_CHECK = """
from dipkd.reports.tables import TABLES
assert [t.name for t in TABLES] == [*(f"table{n}" for n in range(1, 7)), "compare"]
"""

NEW_SOURCE = '''
from ..real import DataSource

SOURCE = DataSource("sar-ship-v2", lambda root, out_dir, options: {},
                    published={"images": 43819, "ships": 59535}, stand_in="ssdd-like")
'''
SOURCE_CHECK = """
from dipkd.datasets.sources import REAL_SOURCES, SOURCES
assert REAL_SOURCES["sar-ship-v2"].published["images"] == 43819 and "sar-ship-v2" in SOURCES
"""

CASES = {   # folder, new module, what must hold, a stage whose manifest must list it
    "method": ("dipkd/baselines", NEW_METHOD, METHOD_CHECK, "pipeline.train"),
    "table": ("dipkd/reports/tables", NEW_TABLE, TABLE_CHECK, "pipeline.make_tables"),
    "source": ("dipkd/datasets/sources", NEW_SOURCE, SOURCE_CHECK, "pipeline.prepare_data"),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_new_plugin_is_one_module_and_no_other_edit(kind, tmp_path):
    folder, source, check, stage = CASES[kind]
    for package in ("dipkd", "pipeline"):
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / folder / "new_plugin.py").write_text(source)
    check += ("from pathlib import Path\nfrom dipkd.code_deps import manifest\n"
              f"assert '{folder}/new_plugin.py' in manifest(Path('.'), '{stage}')\n")
    proc = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True,
                          text=True, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_members_and_module_names():
    import dipkd.baselines
    from dipkd.kd.methods import KDMethod
    names = submodule_names("dipkd.baselines")
    assert "dipkd.baselines.fgd" in names and names == sorted(names)
    found = classes_defined_in([sys.modules["dipkd.baselines.fgd"]], KDMethod)
    assert list(found) == ["FGDLoss"]           # KDMethod itself is imported, not defined
    assert dipkd.baselines.FGDLoss is found["FGDLoss"]
    twice = [sys.modules["dipkd.baselines.fgd"], type(sys)("copy")]
    vars(twice[1])["FGDLoss"] = type("FGDLoss", (KDMethod,), {"__module__": "copy"})
    with pytest.raises(ValueError, match="FGDLoss is defined in two plugin modules"):
        classes_defined_in(twice, KDMethod)
