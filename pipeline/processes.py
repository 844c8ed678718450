"""DVC stage ``processes``: ``runs/processes.json``, the number of training processes per
stage that ``compute.gpus`` resolves to (0 and 1 both mean one process).

The training stages depend on this file instead of on the ``compute`` params, so a change of
``compute`` that does not change how a model is trained (``gpus: 0`` -> ``1``: the same single
process) reruns only this stage, whose output is then unchanged, and retrains nothing; ``gpus:
2`` (two processes, twice the images per step) changes the file and retrains.
"""
from dipkd.evaluation.coco_eval import write_json_atomic
from dipkd.config.params import requested_processes
from pipeline._cli import run

OUT = "runs/processes.json"


def main(params, args):
    processes = requested_processes(params)
    write_json_atomic(OUT, {"processes": processes})
    print(f"[dipkd] training stages run in {processes} process(es) ({OUT})")


if __name__ == "__main__":
    run(main, __doc__)
