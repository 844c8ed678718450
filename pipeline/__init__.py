"""The DVC stages' scripts (``python -m pipeline.<script>``; one per stage of dvc.yaml).

Inside ``dipkd repro`` a stage is run by the warm stage server when there is one
(:mod:`dipkd.stage_server`): ``python -m`` imports this package first, with ``sys.argv[0]``
still ``"-m"``, and :func:`~dipkd.stage_client.delegate` hands the command over and exits
with its code, or returns and the script runs here as usual.
"""
import os as _os
import sys as _sys

if _sys.argv[:1] == ["-m"] and _os.environ.get("DIPKD_STAGE_SERVER"):   # stage_client.SOCKET_ENV
    from dipkd.stage_client import delegate as _delegate
    _delegate()
