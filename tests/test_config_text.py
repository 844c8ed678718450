"""dipkd.config_text: mmengine's config text formatted once per distinct text, unchanged."""
from mmengine.config import Config
from mmengine.config import config as mm_config

from dipkd.config_text import install


def test_pretty_text_is_yapfs_and_formatted_once(monkeypatch):
    cfg = Config(dict(model=dict(type="FasterRCNN", backbone=dict(depth=18)), lr=0.02))
    plain = cfg.pretty_text                      # yapf itself (memo not yet in front here)
    calls = []
    original = mm_config.FormatCode

    def counting(text, style_config=None, **kwargs):
        calls.append(text)
        return original(text, style_config=style_config, **kwargs)

    monkeypatch.setattr(mm_config, "FormatCode", counting)
    install()
    assert cfg.pretty_text == plain
    assert cfg.pretty_text == plain
    assert len(calls) == 1                        # the second read came from the memo
    other = Config(dict(lr=0.01))
    assert "0.01" in other.pretty_text and len(calls) == 2
    install()                                     # a second install keeps the one memo
    assert mm_config.FormatCode.dipkd_memo is not None and cfg.pretty_text == plain
    assert len(calls) == 2
