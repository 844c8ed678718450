"""Inference with exported detectors on images and large SAR scenes (``dipkd infer``).

- :mod:`.images`: reading grayscale 8/16-bit, RGB and RGBA files as the 3-channel 8-bit BGR
  array the models were trained on;
- :mod:`.tiling`: the tile grid at the model's training scale and the merge of the tiles'
  detections (greedy non-maximum merging or class-wise NMS; pure geometry, no mmdet; our
  own small tiler, not SAHI -- see :mod:`.infer`);
- :mod:`.infer`: loading an exported model, tiled detection, the JSON/PNG outputs and the
  command itself.

The package's modules import mmdet/torch only inside functions, so ``dipkd --help`` stays
fast.
"""
