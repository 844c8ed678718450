"""DVC stage ``tables``: reports/table{1..5}.{md,tex,csv} from the evaluated runs' metrics,
the headline numbers in metrics/summary.json and the data of the comparison plots."""
from dipkd.reports import sensitivity, table1, table2, table3
from dipkd.reports.common import header
from dipkd.reports.compare_plots import write_compare_plots
from dipkd.reports.deltas import log_run_deltas
from dipkd.reports.summary import summarize, write_summary
from dipkd.tracking import git_commit
from pipeline._cli import run


def main(params, args):
    head = header(params, git_commit())
    rows1, rows2 = table1.collect(params), table2.collect(params)
    table1.write_table1(rows1, head)
    table2.write_table2(rows2, head, params)
    table3.write_table3(table3.collect(params), head, params)
    for key in sensitivity.TABLES:
        sensitivity.write_sensitivity(sensitivity.collect(params, key), key, head, params)
    write_summary(summarize(params, rows1, rows2))
    write_compare_plots(params, rows2)
    print(f"[dipkd] Δ vs student logged into {log_run_deltas(params)} distilled MLflow runs")
    for n in range(1, 6):
        print(open(f"reports/table{n}.md").read())


if __name__ == "__main__":
    run(main, __doc__)
