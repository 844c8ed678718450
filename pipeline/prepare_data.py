"""DVC stage ``prepare@<dataset>``: write the dataset's COCO layout under data/<dataset>."""
from dipkd.config.params import dataset_spec
from dipkd.datasets.synthetic import generate_dataset
from dipkd.evaluation.coco_eval import write_metrics_json
from pipeline._cli import DATASET, run


def main(params, args):
    spec = dataset_spec(params, args.dataset)
    if spec.source == "synthetic":
        overrides = dict(spec.overrides)
        seed = int(overrides.pop("seed", 0))
        summary = generate_dataset(spec.root, preset=spec.preset, seed=seed, **overrides)
    write_metrics_json(f"metrics/data/{spec.name}.json", summary)
    print(f"[dipkd] {spec.root}: " + "; ".join(
        f"{split} {summary[split]}" for split in ("train", "test")))


if __name__ == "__main__":
    run(main, __doc__, DATASET)
