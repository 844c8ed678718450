"""DVC stage ``schedules``: ``runs/schedules/<dataset>-<detector>-<teacher|student>.json``, the
schedule (epochs, lr, resize scale, lr steps) each training run resolves to from
``profiles.<profile>.schedule`` (:func:`dipkd.config.params.role_schedule`: the teacher's
entry updated by its ``teacher`` mapping; the student's, which every distillation shares,
without it).

The training stages depend on their file instead of on the schedule params, as they depend
on ``runs/processes.json`` instead of ``compute``: a change of the students' epochs rewrites
the teacher's file unchanged, so the teacher is not trained again (and two studies that
differ only in the students' schedule share one teacher through DVC's run-cache); a change
of the teacher's mapping retrains only the teacher and what learns from it.
"""
import dataclasses

from dipkd.config.params import SCHEDULES, run_spec, schedule_path
from dipkd.evaluation.coco_eval import write_json_atomic
from pipeline._cli import run

ROLES = ("teacher", "student")


def main(params, args):
    written = 0
    for dataset in params["datasets"]:
        for detector in params["detectors"]:
            for role in ROLES:
                sched = run_spec(params, role, dataset, detector).schedule
                write_json_atomic(schedule_path(role, dataset, detector),
                                  dataclasses.asdict(sched))
                written += 1
    print(f"[dipkd] {written} resolved schedules in {SCHEDULES}")


if __name__ == "__main__":
    run(main, __doc__)
