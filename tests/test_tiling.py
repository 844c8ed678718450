"""The tiler of `dipkd infer` (dipkd.inference.tiling): hand-computed tile grids, coverage of
the whole scene by full-size tiles, and the class-wise NMS merge of the tiles' detections."""
import numpy as np
import pytest

from dipkd.inference.tiling import (Tile, fits_model_scale, merge_detections, tile_grid,
                                    tile_starts)


@pytest.mark.parametrize("size,tile,overlap,starts", [
    # overlap int(0.2 * 128) = 25 px -> step 103; the last tile is aligned to the border
    (384, 128, 0.2, [0, 103, 206, 256]),
    # int(0.2 * 96) = 19 -> step 77
    (288, 96, 0.2, [0, 77, 154, 192]),
    # an exact multiple of the step: no duplicate last tile
    (300, 100, 0.0, [0, 100, 200]),
    (250, 100, 0.5, [0, 50, 100, 150]),
    (153, 128, 0.2, [0, 25]),
    (129, 128, 0.2, [0, 1]),
    # not larger than the tile: one tile from 0
    (128, 128, 0.2, [0]),
    (50, 128, 0.2, [0]),
])
def test_tile_starts_by_hand(size, tile, overlap, starts):
    assert tile_starts(size, tile, overlap) == starts


def test_grid_of_a_scene_three_times_the_model_scale():
    tiles = tile_grid(384, 288, (128, 96), overlap=0.2)
    assert len(tiles) == 16
    assert tiles[0] == Tile(0, 0, 128, 96)
    assert tiles[1] == Tile(103, 0, 231, 96)          # row by row
    assert tiles[4] == Tile(0, 77, 128, 173)
    assert tiles[-1] == Tile(256, 192, 384, 288)
    assert {(t.width, t.height) for t in tiles} == {(128, 96)}


def test_images_that_fit_the_model_scale_are_run_whole():
    assert tile_grid(128, 96, (128, 96)) == [Tile(0, 0, 128, 96)]
    assert tile_grid(100, 40, (128, 96)) == [Tile(0, 0, 100, 40)]
    # keep-ratio Resize treats the scale in either orientation: a portrait 96x128 image
    # is not shrunk by the scale (128, 96), so it is not tiled either
    assert fits_model_scale(96, 128, (128, 96))
    assert tile_grid(96, 128, (128, 96)) == [Tile(0, 0, 96, 128)]
    assert not fits_model_scale(129, 96, (128, 96))
    assert not fits_model_scale(97, 128, (128, 96))
    # slightly larger than the scale: two tiles along x, the image's own height
    assert tile_grid(153, 90, (128, 96)) == [Tile(0, 0, 128, 90), Tile(25, 0, 153, 90)]


def test_long_thin_scene_is_tiled_along_its_long_axis():
    tiles = tile_grid(1000, 50, (128, 96), overlap=0.2)
    assert [t.x0 for t in tiles] == [0, 103, 206, 309, 412, 515, 618, 721, 824, 872]
    assert {(t.y0, t.y1, t.width) for t in tiles} == {(0, 50, 128)}


@pytest.mark.parametrize("width,height,overlap", [(1000, 700, 0.2), (517, 1301, 0.35),
                                                  (4096, 129, 0.0), (640, 480, 0.9)])
def test_tiles_cover_the_scene_with_full_tiles_and_the_overlap(width, height, overlap):
    tw, th = 256, 160
    tiles = tile_grid(width, height, (tw, th), overlap)
    covered = np.zeros((height, width), bool)
    for t in tiles:
        assert 0 <= t.x0 < t.x1 <= width and 0 <= t.y0 < t.y1 <= height
        assert t.width == min(tw, width) and t.height == min(th, height)
        covered[t.y0:t.y1, t.x0:t.x1] = True
    assert covered.all()
    for size, tile in ((width, tw), (height, th)):
        starts = tile_starts(size, tile, overlap)
        assert starts == sorted(set(starts))
        gaps = np.diff(starts)
        # neighbours overlap by at least floor(overlap * tile) pixels
        assert (tile - gaps >= int(overlap * tile)).all()


@pytest.mark.parametrize("overlap", [1.0, -0.1, 1.5])
def test_bad_overlap_is_refused(overlap):
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(500, 100, overlap)


def _row(dets):
    boxes, scores, labels = dets
    return [(tuple(np.round(b, 3)), round(float(s), 3), int(lab))
            for b, s, lab in zip(boxes, scores, labels)]


def test_merge_shifts_to_scene_and_removes_the_duplicate_of_the_overlap():
    a, b = Tile(0, 0, 128, 96), Tile(103, 0, 231, 96)
    per_tile = [
        # a ship at scene x 110..125 lies in the overlap [103, 128): seen by both tiles
        (a, [[110, 10, 125, 40]], [0.9], [0]),
        (b, [[7, 10, 22, 40],            # the same ship in b's coordinates (0.8)
             [50, 50, 80, 70],           # a ship only b sees -> scene x 153..183
             [7, 10, 22, 40]],           # same place, another class: kept (class-wise NMS)
         [0.8, 0.7, 0.6], [0, 0, 1]),
    ]
    merged = merge_detections(per_tile, iou_threshold=0.5)
    assert _row(merged) == [((110, 10, 125, 40), 0.9, 0), ((153, 50, 183, 70), 0.7, 0),
                            ((110, 10, 125, 40), 0.6, 1)]


def test_merge_of_a_ship_cut_by_a_tile_border():
    """A ship at scene x 115..135 crosses the right border (128) of tile a: a sees the part
    115..128, b the whole ship (IoU 13/20 = 0.65 > 0.5): one box, the higher-scoring one."""
    a, b = Tile(0, 0, 128, 96), Tile(103, 0, 231, 96)
    per_tile = [(a, [[115, 20, 128, 30]], [0.6], [0]),
                (b, [[12, 20, 32, 30]], [0.9], [0])]
    assert _row(merge_detections(per_tile, 0.5)) == [((115, 20, 135, 30), 0.9, 0)]
    # with a stricter threshold both stay: the threshold is the option's, not fixed
    assert len(merge_detections(per_tile, 0.7)[0]) == 2


def test_a_single_tile_is_not_merged_again():
    whole = Tile(0, 0, 100, 80)
    boxes = [[10, 10, 30, 30], [12, 10, 32, 30]]      # IoU 0.82: NMS would drop one
    merged = merge_detections([(whole, boxes, [0.5, 0.7], [0, 0])], 0.5)
    assert _row(merged) == [((12, 10, 32, 30), 0.7, 0), ((10, 10, 30, 30), 0.5, 0)]


def test_merge_without_detections():
    boxes, scores, labels = merge_detections([(Tile(0, 0, 10, 10), np.zeros((0, 4)), [], []),
                                              (Tile(5, 0, 15, 10), np.zeros((0, 4)), [], [])])
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.dtype == np.int64
