"""DVC stage ``tables``: reports/tables/table{1..5}.{md,tex,csv} and compare.{md,tex,csv} (the
paired comparisons of params' ``compare``, also logged into MLflow as compare/*) from the
evaluated runs' metrics
(every table of :data:`dipkd.reports.tables.TABLES`; each run's MLflow ``tables`` tag from
their run lists), the headline numbers in
metrics/summary.json and the data of the comparison plots."""
from dipkd import console
from dipkd.reports.common import TABLES_DIR, header
from dipkd.reports.compare_plots import write_compare_plots
from dipkd.reports.deltas import log_run_deltas
from dipkd.reports.pairs import TABLE_NAME as COMPARE, log_comparisons
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
    deltas, tagged = log_run_deltas(params), tag_runs(params)
    compared = log_comparisons(params, rows[COMPARE])
    console.say(f"[dipkd] wrote {len(TABLES)} tables in {TABLES_DIR}/ (.md, .tex, .csv); Δ "
                f"vs student logged into {deltas} MLflow runs, compare/* into {compared}, the "
                f"tables tag on {tagged}")
    for table in TABLES:                      # on the console with DIPKD_VERBOSE=1
        print((TABLES_DIR / f"{table.name}.md").read_text())


if __name__ == "__main__":
    run(main, __doc__, quiet=True)
