"""DVC stage ``tables``: reports/tables/table{1..5}.{md,tex,csv} from the evaluated runs' metrics
(every table of :data:`dipkd.reports.tables.TABLES`; each run's MLflow ``tables`` tag from
their run lists), the headline numbers in
metrics/summary.json and the data of the comparison plots."""
from dipkd.reports.common import TABLES_DIR, header
from dipkd.reports.compare_plots import write_compare_plots
from dipkd.reports.deltas import log_run_deltas
from dipkd.reports.summary import summarize, write_summary
from dipkd.reports.tables import TABLES, tag_runs
from dipkd.tracking import git_commit
from pipeline._cli import run


def main(params, args):
    head = header(params, git_commit())
    rows = {table.name: table.collect(params) for table in TABLES}   # a missing run: error
    for table in TABLES:
        table.write(rows[table.name], head, params)
    write_summary(summarize(params, rows["table1"], rows["table2"]))
    write_compare_plots(params, rows["table2"])
    print(f"[dipkd] Δ vs student logged into {log_run_deltas(params)} distilled MLflow runs")
    print(f"[dipkd] tables tag set on {tag_runs(params)} MLflow runs")
    for table in TABLES:
        print((TABLES_DIR / f"{table.name}.md").read_text())


if __name__ == "__main__":
    run(main, __doc__)
