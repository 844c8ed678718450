"""Reading params.yaml and turning it into mmdet/mmengine configs."""
