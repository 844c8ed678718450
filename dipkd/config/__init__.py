"""Reading and validating params.yaml (the lowest layer: it imports only the plain-data
registries of detectors and data sources; the mmdet config of a run is built by
:mod:`dipkd.mmdet_config`)."""
