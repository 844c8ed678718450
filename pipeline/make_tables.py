"""DVC stage ``tables``: reports/table1.* and table2.* from the evaluated runs' metrics."""
from dipkd.reports import table1, table2
from dipkd.reports.common import header
from dipkd.tracking import git_commit
from pipeline._cli import run


def main(params, args):
    head = header(params, git_commit())
    table1.write_table1(table1.collect(params), head)
    table2.write_table2(table2.collect(params), head, params)
    for name in ("table1.md", "table2.md"):
        print(open(f"reports/{name}").read())


if __name__ == "__main__":
    run(main, __doc__)
