"""The tiler of `dipkd infer` (dipkd.inference.tiling): hand-computed tile grids, coverage of
the whole scene by full-size tiles, and the merge of the tiles' detections: class-wise NMS and
greedy non-maximum merging (NMM) of the partial boxes of ships cut by tile borders."""
import numpy as np
import pytest

from dipkd.inference.tiling import (Tile, fits_model_scale, intersection_over_smaller,
                                    merge_detections, tile_grid, tile_starts)


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


@pytest.mark.parametrize("method", ["nms", "nmm"])
def test_merge_shifts_to_scene_and_removes_the_duplicate_of_the_overlap(method):
    a, b = Tile(0, 0, 128, 96), Tile(103, 0, 231, 96)
    per_tile = [
        # a ship at scene x 110..125 lies in the overlap [103, 128): seen by both tiles
        (a, [[110, 10, 125, 40]], [0.9], [0]),
        (b, [[7, 10, 22, 40],            # the same ship in b's coordinates (0.8)
             [50, 50, 80, 70],           # a ship only b sees -> scene x 153..183
             [7, 10, 22, 40]],           # same place, another class: kept (class-wise NMS)
         [0.8, 0.7, 0.6], [0, 0, 1]),
    ]
    merged = merge_detections(per_tile, iou_threshold=0.5, method=method)
    assert _row(merged) == [((110, 10, 125, 40), 0.9, 0), ((153, 50, 183, 70), 0.7, 0),
                            ((110, 10, 125, 40), 0.6, 1)]


@pytest.mark.parametrize("method", ["nms", "nmm"])
def test_merge_of_a_ship_cut_by_a_tile_border(method):
    """A ship at scene x 115..135 crosses the right border (128) of tile a: a sees the part
    115..128, b the whole ship (IoU 13/20 = 0.65 > 0.5, IoS 1): one box, the whole ship."""
    a, b = Tile(0, 0, 128, 96), Tile(103, 0, 231, 96)
    per_tile = [(a, [[115, 20, 128, 30]], [0.6], [0]),
                (b, [[12, 20, 32, 30]], [0.9], [0])]
    assert _row(merge_detections(per_tile, 0.5, method)) == [((115, 20, 135, 30), 0.9, 0)]
    # with a stricter threshold both stay: the threshold is the option's, not fixed
    assert len(merge_detections(per_tile, 0.7, "nms")[0]) == 2


@pytest.mark.parametrize("method", ["nms", "nmm"])
def test_a_single_tile_is_not_merged_again(method):
    whole = Tile(0, 0, 100, 80)
    boxes = [[10, 10, 30, 30], [12, 10, 32, 30]]      # IoU 0.82: NMS would drop one
    merged = merge_detections([(whole, boxes, [0.5, 0.7], [0, 0])], 0.5, method)
    assert _row(merged) == [((12, 10, 32, 30), 0.7, 0), ((10, 10, 30, 30), 0.5, 0)]


@pytest.mark.parametrize("method", ["nms", "nmm"])
def test_merge_without_detections(method):
    boxes, scores, labels = merge_detections([(Tile(0, 0, 10, 10), np.zeros((0, 4)), [], []),
                                              (Tile(5, 0, 15, 10), np.zeros((0, 4)), [], [])],
                                             method=method)
    assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.dtype == np.int64
    assert boxes.dtype == np.float32


# --- NMM: long ships cut by tile borders ---------------------------------------------------

# A 400x400 scene in tiles of 192x128 with overlap 0.2: columns start at 0, 154, 208 (38 px
# overlap at least), rows at 0, 103, 206, 272 (25 px). Each ship below is longer than the
# overlap, so no tile sees it whole; each tile that cuts it reports the part inside it.
SCENE_TILES = tile_grid(400, 400, (192, 128), 0.2)
SHIPS = {                      # scene xyxy
    "east-west": (150, 20, 240, 34),      # columns 0, 1, 2: parts 150..192, 154..240, 208..240
    "north-south": (60, 90, 72, 170),     # rows 0, 1: parts 90..128, 103..170
    "corner": (140, 110, 200, 150),       # 4 tiles, columns 0/1 and rows 0/1
    # two parallel ships 4 px apart, both cut by the border of columns 0 and 1
    "twin-a": (100, 350, 200, 358),
    "twin-b": (100, 362, 200, 370),
}


def _tile_of(x0, y0):
    return next(t for t in SCENE_TILES if (t.x0, t.y0) == (x0, y0))


def _partial_boxes(ships, label=0):
    """Per tile: the part of each ship inside the tile, in the tile's coordinates (what a
    detector sees of a cut ship), scored by the part's length (the longest part scores
    highest)."""
    per_tile = []
    for tile in SCENE_TILES:
        boxes, scores = [], []
        for x1, y1, x2, y2 in ships:
            cx1, cy1 = max(x1, tile.x0), max(y1, tile.y0)
            cx2, cy2 = min(x2, tile.x1), min(y2, tile.y1)
            if cx2 > cx1 and cy2 > cy1:
                boxes.append([cx1 - tile.x0, cy1 - tile.y0, cx2 - tile.x0, cy2 - tile.y0])
                scores.append(0.5 + 0.004 * max(cx2 - cx1, cy2 - cy1))
        per_tile.append((tile, boxes, scores, [label] * len(boxes)))
    return per_tile


def test_the_synthetic_scene_cuts_every_ship():
    assert [t.x0 for t in SCENE_TILES[:3]] == [0, 154, 208]
    assert [t.y0 for t in SCENE_TILES[::3]] == [0, 103, 206, 272]
    for name, ship in SHIPS.items():
        parts = [b for _, boxes, _, _ in _partial_boxes([ship]) for b in boxes]
        assert len(parts) >= 2, name
        whole = (ship[2] - ship[0], ship[3] - ship[1])
        assert all((b[2] - b[0], b[3] - b[1]) != whole for b in parts), name


def test_nmm_gives_one_box_per_ship_covering_it_and_nms_keeps_partial_boxes():
    per_tile = _partial_boxes(SHIPS.values())
    boxes, scores, labels = merge_detections(per_tile, method="nmm", merge_threshold=0.5)
    assert sorted(map(tuple, boxes.tolist())) == sorted(SHIPS.values())
    # each merged box keeps the highest score of its parts
    best = {ship: max(s for _, b, sc, _ in _partial_boxes([ship]) for s in sc)
            for ship in SHIPS.values()}
    for box, score in zip(map(tuple, boxes.tolist()), scores):
        assert score == pytest.approx(best[box])
    assert (np.diff(scores) <= 0).all() and (labels == 0).all()

    nms_boxes = merge_detections(per_tile, iou_threshold=0.5, method="nms")[0]
    assert len(nms_boxes) > len(SHIPS)
    # no NMS box covers the east-west ship: its parts' IoU is below 0.5
    assert tuple(SHIPS["east-west"]) not in map(tuple, nms_boxes.tolist())


def test_nmm_threshold_is_the_options():
    """The east-west ship's parts 150..192 and 154..240 meet on 154..192: IoS 38/42."""
    a, b = _tile_of(0, 0), _tile_of(154, 0)
    assert intersection_over_smaller(np.array([150., 20, 192, 34]),
                                     np.array([[154., 20, 240, 34]])) == pytest.approx(38 / 42)
    per_tile = [(a, [[150, 20, 192, 34]], [0.6], [0]), (b, [[0, 20, 86, 34]], [0.9], [0])]
    assert _row(merge_detections(per_tile, method="nmm", merge_threshold=0.9)) == \
        [((150, 20, 240, 34), 0.9, 0)]
    assert len(merge_detections(per_tile, method="nmm", merge_threshold=0.91)[0]) == 2


def test_nmm_never_merges_other_classes():
    ship = SHIPS["east-west"]
    ships_as_0 = _partial_boxes([ship], label=0)
    ships_as_1 = _partial_boxes([ship], label=1)
    boxes, _, labels = merge_detections(ships_as_0 + ships_as_1, method="nmm")
    assert sorted(labels.tolist()) == [0, 1]
    assert [tuple(b) for b in boxes.tolist()] == [ship, ship]


def test_nmm_joins_the_fragment_boxes_a_tile_adds_inside_a_ship():
    """A tile's detector may add boxes of parts of a ship beside the ship's box (seen on the
    README's scene); NMM merges them into the ship's box, as SAHI does, NMS keeps them."""
    a, b = _tile_of(0, 103), _tile_of(154, 103)
    per_tile = [(a, [[153, 66, 183, 119]], [0.89], [0]),             # scene 153..183 x 169..222
                (b, [[0, 66, 30, 118], [2, 79, 24, 103], [9, 83, 29, 123]],
                 [0.99, 0.72, 0.49], [0, 0, 0])]
    assert _row(merge_detections(per_tile, method="nmm")) == [((153, 169, 184, 226), 0.99, 0)]
    assert len(merge_detections(per_tile, method="nms")[0]) == 3


def test_unknown_merge_method_is_refused():
    with pytest.raises(ValueError, match="merge method"):
        merge_detections(_partial_boxes([SHIPS["corner"]]), method="wbf")
    with pytest.raises(ValueError, match="IoS"):
        merge_detections(_partial_boxes([SHIPS["corner"]]), method="nmm", merge_threshold=0)
