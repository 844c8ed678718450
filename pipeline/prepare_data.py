"""DVC stage ``prepare@<dataset>``: write the dataset's COCO layout under data/<dataset>
(synthetic scenes, or a real SSDD/HRSID release from a folder, an archive or a URL).

The summary's numbers go to ``metrics/data/<dataset>.json`` (``dvc metrics show``); the whole
summary, with its text fields (source, warnings, the generator's config), is the layout's
``data/<dataset>/summary.json``."""
from dipkd.config.params import dataset_spec
from dipkd.datasets.download import DownloadError
from dipkd.datasets.prepare import prepare_real
from dipkd.datasets.synthetic import generate_dataset
from dipkd.evaluation.coco_eval import write_metrics_json
from pipeline._cli import DATASET, run


def _is_numeric(value) -> bool:
    """A number (not a bool), or a non-empty dict whose values all are (recursively)."""
    if isinstance(value, dict):
        return bool(value) and all(map(_is_numeric, value.values()))
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def numeric_fields(summary: dict) -> dict:
    """The fields of a dataset summary that are metrics: numbers and dicts of numbers."""
    return {key: value for key, value in summary.items() if _is_numeric(value)}


def main(params, args):
    spec = dataset_spec(params, args.dataset)
    if spec.source == "synthetic":
        overrides = dict(spec.overrides)
        seed = int(overrides.pop("seed", 0))
        summary = generate_dataset(spec.root, preset=spec.preset, seed=seed, **overrides)
    else:
        try:  # archive and dataset errors are ValueErrors already
            summary = prepare_real(spec.name, spec.source, spec.options, spec.root)
        except DownloadError as exc:
            raise ValueError(str(exc)) from None
    write_metrics_json(spec.metrics_path, numeric_fields(summary))
    print(f"[dipkd] {spec.root}: " + "; ".join(
        f"{split} {summary[split]}" for split in ("train", "test")))


if __name__ == "__main__":
    run(main, __doc__, DATASET)
