"""Shared argument handling for the stage scripts: clear one-line errors, no tracebacks for
bad input."""
from __future__ import annotations

import argparse
import sys

from dipkd.config.params import ParamsError, load_params
from dipkd.models.pretrained import PretrainedWeightsError


def run(main, description: str, *args_spec) -> None:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml")
    for names, kwargs in args_spec:
        parser.add_argument(*names, **kwargs)
    args = parser.parse_args()
    try:
        params = load_params(args.params)
        main(params, args)
    except (ParamsError, FileNotFoundError, ValueError, PretrainedWeightsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


DATASET = (("--dataset",), dict(required=True))
DETECTOR = (("--detector",), dict(required=True))
