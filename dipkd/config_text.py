"""One yapf formatting per distinct config text in a process.

mmengine's ``Config.pretty_text`` formats the config's Python text with yapf every time it
is read, and one training stage reads it about fourteen times (the Runner logs and dumps its
config, every checkpoint and the exported model embed it, the resume fingerprint hashes it):
seconds of pure-Python formatting per stage for a handful of distinct texts. :func:`install`
puts a memo in front of the ``FormatCode`` that ``mmengine.config.config`` calls, keyed by
the text and the style, so each distinct text is formatted once; the formatted text is the
same string yapf returns, so every config file, checkpoint and fingerprint is unchanged.
"""
from __future__ import annotations

from collections import OrderedDict

_MEMO_SIZE = 64     # distinct config texts kept per process (a stage has a few)


def _key(text: str, style, kwargs: dict) -> tuple:
    style_key = repr(sorted(style.items())) if isinstance(style, dict) else repr(style)
    return text, style_key, tuple(sorted(kwargs.items()))


def install() -> None:
    """Wrap ``mmengine.config.config.FormatCode`` in the memo (once per process)."""
    from mmengine.config import config as mm_config
    original = mm_config.FormatCode
    if getattr(original, "dipkd_memo", None) is not None:
        return
    memo: OrderedDict = OrderedDict()

    def format_code(text, style_config=None, **kwargs):
        key = _key(text, style_config, kwargs)
        if key in memo:
            memo.move_to_end(key)
            return memo[key]
        memo[key] = result = original(text, style_config=style_config, **kwargs)
        if len(memo) > _MEMO_SIZE:
            memo.popitem(last=False)
        return result

    format_code.dipkd_memo = memo
    mm_config.FormatCode = format_code
