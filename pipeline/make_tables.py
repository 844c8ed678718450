"""DVC stage ``tables``: reports/table{1..5}.{md,tex,csv} from the evaluated runs' metrics."""
from dipkd.reports import sensitivity, table1, table2, table3
from dipkd.reports.common import header
from dipkd.reports.deltas import log_run_deltas
from dipkd.tracking import git_commit
from pipeline._cli import run


def main(params, args):
    head = header(params, git_commit())
    table1.write_table1(table1.collect(params), head)
    table2.write_table2(table2.collect(params), head, params)
    table3.write_table3(table3.collect(params), head, params)
    for key in sensitivity.TABLES:
        sensitivity.write_sensitivity(sensitivity.collect(params, key), key, head, params)
    print(f"[dipkd] Δ vs student logged into {log_run_deltas(params)} distilled MLflow runs")
    for n in range(1, 6):
        print(open(f"reports/table{n}.md").read())


if __name__ == "__main__":
    run(main, __doc__)
