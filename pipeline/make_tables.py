"""DVC stage ``tables``: reports/table1.{md,csv} from the evaluated runs' metrics files."""
from dipkd.reports.table1 import collect, header, write_table1
from dipkd.tracking import git_commit
from pipeline._cli import run


def main(params, args):
    df = collect(params)
    write_table1(df, header(params, git_commit()))
    print(open("reports/table1.md").read())


if __name__ == "__main__":
    run(main, __doc__)
