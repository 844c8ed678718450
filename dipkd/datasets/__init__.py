"""SAR ship datasets in one COCO layout: the synthetic generator (offline default)."""
