"""The README is a front page and docs/ (mkdocs, material theme) holds the rest: the site builds
with --strict (no broken link, anchor or page reference), every nav page exists and has content,
the front page stays short and its excerpt of the committed study matches the study's tables,
and facts moved out of the README are still written down somewhere."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
STUDY = REPO / "reports" / "studies" / "long"


def _nav_pages(nav):
    """The Markdown files named in mkdocs.yml's nav, at any depth."""
    for item in nav:
        if isinstance(item, str):
            yield item
        elif isinstance(item, dict):
            for value in item.values():
                if isinstance(value, str):
                    yield value
                else:
                    yield from _nav_pages(value)


def _config():
    return yaml.safe_load((REPO / "mkdocs.yml").read_text())


def _all_text():
    return README.read_text() + "\n".join(p.read_text() for p in sorted(DOCS.rglob("*.md")))


def test_mkdocs_build_strict(tmp_path):
    missing = [m for m in ("mkdocs", "material") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (the `test` extra of pyproject.toml "
                    "brings mkdocs and mkdocs-material)")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "site" / "index.html").is_file()


def test_readme_is_a_front_page():
    lines = README.read_text().splitlines()
    assert len(lines) <= 160, f"README.md has {len(lines)} lines; move reference text to docs/"


def test_nav_pages_exist_have_content_and_cover_docs():
    config = _config()
    assert config["docs_dir"] == "docs" and config["theme"]["name"] == "material"
    pages = list(_nav_pages(config["nav"]))
    assert len(pages) == len(set(pages)), "a page is twice in the nav"
    for page in pages:
        path = DOCS / page
        assert path.is_file(), f"nav page {page} missing"
        assert len(path.read_text().strip().splitlines()) > 10, f"{page} is nearly empty"
    assert {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")} == set(pages), \
        "every docs page is in the nav"


def test_readme_links_resolve():
    """Relative links and images of the front page point at files of the repository."""
    for target in re.findall(r"\]\(([^)\s]+)\)", README.read_text()):
        if re.match(r"[a-z]+://|#|mailto:", target):
            continue
        assert (REPO / target.split("#")[0]).exists(), f"README.md links to missing {target}"


def test_readme_study_excerpt_matches_the_committed_tables():
    source = (STUDY / "table1.md").read_text() + (STUDY / "table2.md").read_text()
    rows = [line for line in README.read_text().splitlines()
            if re.match(r"\| (ResNet|ours:|FGD)", line)]
    assert len(rows) >= 3
    for row in rows:
        for cell in (c.strip() for c in row.strip("|").split("|")):
            if cell and cell != "-":
                assert cell in source, f"README excerpt cell {cell!r} not in {STUDY}"
    assert "reports/studies/long/curves.png" in README.read_text()


@pytest.mark.parametrize("fact", [
    # the deviation table, whole (checked on the method page below), and the method's defaults
    "| 17 | odd-sided maps in the wavelet step |",
    "| 18 | wavelet levels on small maps |",
    "| 19 | RIT's student input |",
    "alpha 5e-5, beta 3.5e-5",
    # setup and the first run
    "DIPKD_WHEEL_CACHE", "about 15 minutes on 2 cores", "one dot per compiled",
    "58 stages in **7.0 minutes**", "make repro AT_ONCE=1",
    # profiles, pipeline, tracking
    "AP50 95.6, mAP 67.6", "<<: *paper_train", "dvc exp run -S 'ablation.tau=[0.25,0.75,2.0]'",
    "mlflow.experimentKind = custom_model_development", "tags.tables LIKE '%table2%'",
    # GPUs and clusters
    "--nproc_per_node N", "MLFLOW_TRACKING_URI=http://host:5000", "dipkd repro --jobs",
    "mmcv-2.1.0_torch-2.14.1_cu130-sm8.0+8.6_cp311", "sqlite:///mlflow.db?timeout=60",
    # real data
    "Official-SSDD-OPEN.rar", "232 test / 928 train", "5604/16951", "area_fallbacks",
    # baselines, figures, benchmarks, layout, the study
    "| FGD (CVPR 2022) | `fgd.py` |", "| IFKD (ACM MM 2024) | `ifkd.py` |",
    "fig3_speckle.png", "11.6x faster than PyWavelets", "`dipkd/plugins.py`",
    "| `dipkd/launch.py` |", "+14.6 [+10.3, +18.6]", "Δ +15.9 [+13.0, +18.8]",
])
def test_facts_moved_out_of_the_readme_are_kept(fact):
    assert fact in _all_text()


def test_deviation_table_is_whole_on_the_method_page():
    method = (DOCS / "method.md").read_text()
    rows = re.findall(r"^\| (\d+) \|", method, flags=re.M)
    assert rows == [str(i) for i in range(1, len(rows) + 1)] and len(rows) >= 19
