"""The torch engine's input: JPEG sizes without decoding, crop boxes, rank shards, and real decoded batches."""

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the torch engine is an extra: pip install -e .[torch]")
cv2 = pytest.importorskip("cv2", reason="OpenCV decodes the images")

from engine import recordio
from engine.errors import UserError
from engine.train.torch import data

# Solid colours (RGB) per label, so a decoded pixel tells whether channels and labels stayed together.
COLOURS = {0: (200, 30, 30), 1: (30, 200, 30), 2: (30, 30, 200), 3: (220, 220, 40)}


def _jpeg(rgb, h=48, w=64, progressive=False):
    img = np.zeros((h, w, 3), np.uint8)
    img[:] = rgb[::-1]  # OpenCV writes BGR
    params = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_PROGRESSIVE, int(progressive)]
    return cv2.imencode(".jpg", img, params)[1].tobytes()


@pytest.fixture
def solid_rec(tmp_path):
    """12 records: 3 of each colour; record 5 has a label array (flag 2), 7 is not an image, 10 is empty."""
    rec, idx = tmp_path / "solid.rec", tmp_path / "solid.idx"
    with recordio.IndexedRecordWriter(str(idx), str(rec)) as w:
        for k in range(12):
            label = k % 4
            broken = {7: b"not a jpeg at all", 10: b""}
            payload = broken[k] if k in broken else _jpeg(COLOURS[label])
            header = (0, [float(label), 9.0] if k == 5 else float(label), k, 0)
            w.write_idx(k, recordio.pack(header, payload))
    return str(rec)


@pytest.mark.parametrize(
    ("h", "w", "progressive"), [(48, 64, False), (375, 500, True), (9, 1200, False)]
)
def test_jpeg_size_reads_the_frame_header_as_opencv_decodes_it(h, w, progressive):
    buf = _jpeg((1, 2, 3), h, w, progressive)
    assert (
        data.jpeg_size(buf)
        == cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR).shape[:2]
    )


def test_jpeg_size_is_none_for_anything_else():
    png = cv2.imencode(".png", np.zeros((4, 4, 3), np.uint8))[1].tobytes()
    assert data.jpeg_size(png) is None
    assert data.jpeg_size(b"\xff\xd8\xff") is None
    assert data.jpeg_size(b"") is None


def test_decode_scale_down_keeps_the_crop_at_least_the_output_size():
    whole = (0.0, 0.0, 1.0, 1.0)
    assert data.reduction(480, 640, whole, 224) == 2  # 480/2 = 240 >= 224; 480/4 = 120 is not
    assert data.reduction(480, 640, whole, 32) == 8
    assert data.reduction(480, 640, (0.0, 0.0, 0.3, 0.3), 224) == 1


def test_random_resized_crop_boxes_stay_inside_with_the_asked_area():
    aug = data.Augment(size=224, mode="resized", min_area=0.25, max_area=0.5)
    rng = np.random.default_rng(0)
    for _ in range(200):
        top, left, h, w = data.random_box(480, 640, aug, rng)
        assert top >= 0 and left >= 0 and top + h <= 1 + 1e-9 and left + w <= 1 + 1e-9
        assert 0.2 < h * w < 0.55  # rounding to whole pixels moves the area a little


def test_scale_mode_crops_size_over_scale_pixels():
    aug = data.Augment(size=224, mode="scale", min_scale=0.5, max_scale=0.5)
    _, _, h, w = data.random_box(480, 640, aug, np.random.default_rng(0))
    assert (round(h * 480), round(w * 640)) == (448, 448)


def test_training_shards_are_disjoint_equal_and_reshuffled_each_epoch():
    shards = [data.ShardedBatches(103, 5, rank, 3, train=True, seed=1) for rank in range(3)]
    first = [np.concatenate([b for _, _, b in s]) for s in shards]
    assert all(len(f) == 30 for f in first)  # 103 // 3 = 34 per rank, 6 full batches of 5
    assert len(set(np.concatenate(first))) == 90
    for s in shards:
        s.set_epoch(1)
    second = np.concatenate([b for _, _, b in shards[0]])
    assert not np.array_equal(first[0], second)
    shards[0].set_epoch(0)
    assert np.array_equal(np.concatenate([b for _, _, b in shards[0]]), first[0])  # seeded by epoch


def test_resuming_mid_epoch_skips_the_batches_already_trained():
    shard = data.ShardedBatches(40, 4, 0, 1, train=True, seed=0)
    shard.set_epoch(2)
    full = list(shard)
    shard.set_epoch(2, start_batch=3)
    rest = list(shard)
    assert [b for _, b, _ in rest] == list(range(3, 10))
    assert np.array_equal(rest[0][2], full[3][2])


def test_validation_shards_cover_every_record_once():
    seen = [
        p
        for rank in range(3)
        for _, _, b in data.ShardedBatches(10, 4, rank, 3, train=False)
        for p in b
    ]
    assert sorted(seen) == list(range(10))


def _loader(rec, threads=0, **kw):
    aug = kw.pop("aug", data.Augment(size=16, mode="centre", mirror=False))
    return data.RecordLoader(
        data.open_index(rec), 4, aug, threads=threads, mean=(0, 0, 0), std=(1, 1, 1), **kw
    )


def test_batches_are_rgb_channels_last_with_their_labels_and_corrupt_images_black(solid_rec):
    loader = _loader(solid_rec)
    batches = list(loader)
    x = torch.cat([b.data for b in batches])
    y = torch.cat([b.label for b in batches])
    assert x.shape == (12, 3, 16, 16) and x.is_contiguous(memory_format=torch.channels_last)
    assert y.tolist() == [k % 4 for k in range(12)]  # record 5's label array gives its first label
    for k in range(12):
        expected = (0, 0, 0) if k in (7, 10) else COLOURS[k % 4]
        assert np.allclose(x[k].mean(dim=(1, 2)).numpy(), expected, atol=4), k
    assert sum(b.corrupt for b in batches) == 2


def test_worker_processes_give_the_same_augmented_batches_as_decoding_in_place(solid_rec):
    aug = data.Augment(size=16, mode="resized", min_area=0.3)
    one = [b.data for b in _loader(solid_rec, threads=0, aug=aug, seed=3)]
    two = [b.data for b in _loader(solid_rec, threads=1, aug=aug, seed=3)]
    assert len(one) == 3 and all(torch.equal(a, b) for a, b in zip(one, two))


def test_a_label_beyond_num_classes_names_the_flag(solid_rec):
    with pytest.raises(UserError, match="--num-classes"):
        list(_loader(solid_rec, num_classes=3))


def test_a_directory_reads_only_its_rec_chunks_and_needs_their_idx(solid_rec, tmp_path):
    (tmp_path / "train.lst").write_text("stray list\n")
    index = data.open_index(str(tmp_path))
    assert index.files == (solid_rec,) and len(index) == 12
    (tmp_path / "solid.idx").unlink()
    with pytest.raises(UserError, match="solid.idx"):
        data.open_index(str(tmp_path))


RGB = "ImageReadMode.RGB"  # stands in for torchvision.io.ImageReadMode.RGB


class StandInDecodeJpeg:
    """Behaves like torchvision.io.decode_jpeg, on the CPU (no GPU here).

    Same signature; the input is one 1-D uint8 CPU tensor or a list of them; a list is decoded all
    or nothing (one refused image fails the batched nvJPEG call); data that is not a decodable
    JPEG raises RuntimeError, as nvJPEG does for a damaged image, a PNG or an empty payload.
    Every call is recorded: how many images it was given.
    """

    def __init__(self):
        self.calls: list[int | None] = []  # list length, or None for a single tensor

    def __call__(self, input, mode=None, device="cpu", apply_exif_orientation=False):
        assert mode == RGB and str(device) == "cpu"
        if isinstance(input, list):
            self.calls.append(len(input))
            return [self._one(t) for t in input]
        self.calls.append(None)
        return self._one(input)

    @staticmethod
    def _one(blob):
        assert blob.dtype == torch.uint8 and blob.dim() == 1 and blob.device.type == "cpu"
        raw = blob.numpy()
        if raw[:2].tobytes() != b"\xff\xd8":
            raise RuntimeError(f"Not a JPEG file: starts with 0x{raw[:2].tobytes().hex()}")
        bgr = cv2.imdecode(raw, cv2.IMREAD_COLOR)
        if bgr is None:
            raise RuntimeError("nvjpegDecode failed: NVJPEG_STATUS_BAD_JPEG")
        return torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1)))


@pytest.fixture
def stand_in(monkeypatch):
    decode = StandInDecodeJpeg()
    monkeypatch.setattr(data, "_nvjpeg", lambda: (decode, RGB))
    return decode


def _png(rgb):
    img = np.zeros((20, 30, 3), np.uint8)
    img[:] = rgb[::-1]
    return cv2.imencode(".png", img)[1].tobytes()


def test_gpu_decode_is_one_batched_call_when_every_image_decodes(stand_in):
    blobs = [_jpeg(COLOURS[k]) for k in range(4)]
    images, corrupt = data._decode_on_gpu(data._pack_blobs(blobs), torch.device("cpu"))
    assert stand_in.calls == [4] and corrupt == 0
    assert [tuple(img.shape) for img in images] == [(3, 48, 64)] * 4
    for k, img in enumerate(images):
        assert np.allclose(img.float().mean(dim=(1, 2)).numpy(), COLOURS[k], atol=4), k


def test_gpu_decode_falls_back_per_image_opencv_takes_a_png_and_only_the_undecodable_count():
    decode = StandInDecodeJpeg()
    blobs = [_jpeg(COLOURS[0]), _png(COLOURS[1]), b"not a jpeg at all", b"", _jpeg(COLOURS[2])]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(data, "_nvjpeg", lambda: (decode, RGB))
        images, corrupt = data._decode_on_gpu(data._pack_blobs(blobs), torch.device("cpu"))
    # the batched call failed on the PNG; then one call per image
    assert decode.calls == [5, None, None, None, None, None]
    assert corrupt == 2  # the garbage and the empty record; the PNG is OpenCV's
    means = [tuple(img.float().mean(dim=(1, 2)).round().tolist()) for img in images]
    assert len(means) == 5
    assert np.allclose(means[0], COLOURS[0], atol=4) and np.allclose(means[4], COLOURS[2], atol=4)
    assert np.allclose(means[1], COLOURS[1], atol=1)  # PNG is lossless
    assert means[2] == means[3] == (0.0, 0.0, 0.0)


def test_the_gpu_path_counts_corrupt_images_and_blacks_them_like_the_cpu_path(solid_rec, stand_in):
    batches = list(_loader(solid_rec, gpu_decode=True))
    assert len(batches) == 3
    x = torch.cat([b.data for b in batches])
    assert x.shape == (12, 3, 16, 16)
    for k in range(12):
        expected = (0, 0, 0) if k in (7, 10) else COLOURS[k % 4]
        assert np.allclose(x[k].mean(dim=(1, 2)).numpy(), expected, atol=4), k
    assert [b.corrupt for b in batches] == [0, 1, 1]  # records 7 and 10
    assert stand_in.calls.count(4) == 3  # every batch tried nvJPEG's batched call first


def test_the_gpu_decoding_path_crops_flips_and_normalises_like_the_cpu_path(solid_rec, stand_in):
    aug = data.Augment(size=16, mode="resized", min_area=0.3)
    gpu_path = list(_loader(solid_rec, aug=aug, gpu_decode=True, seed=5))
    cpu_path = list(_loader(solid_rec, aug=aug, gpu_decode=False, seed=5))
    assert len(gpu_path) == len(cpu_path) == 3
    compared = 0
    for g, c in zip(gpu_path, cpu_path, strict=True):
        assert g.data.shape == c.data.shape and g.data.is_contiguous(
            memory_format=torch.channels_last
        )
        assert torch.equal(g.label, c.label) and g.corrupt == c.corrupt
        good = [
            k
            for k in range(len(g.label))
            if g.data[k].abs().sum() > 0 and c.data[k].abs().sum() > 0
        ]
        # solid colours: both paths give the same colour whatever the resampling filter
        assert torch.allclose(g.data[good].mean(dim=(2, 3)), c.data[good].mean(dim=(2, 3)), atol=4)
        compared += len(good)
    assert compared == 10  # every image but the two corrupt ones was compared


def test_an_index_that_does_not_match_its_rec_is_one_clear_error(solid_rec, tmp_path):
    """Offsets shifted by 4 bytes land inside records: the worker's error comes back as one line."""
    idx = tmp_path / "solid.idx"
    lines = [line.split("\t") for line in idx.read_text().splitlines()]
    idx.write_text("".join(f"{k}\t{int(off) + 4}\n" for k, off in lines))
    with pytest.raises(UserError, match="bad magic") as err:
        list(_loader(solid_rec, threads=1))
    assert "\n" not in str(err.value) and "re-pack" in str(err.value)


def test_prefetch_hands_over_items_and_errors_and_stops_with_its_consumer():
    cpu = torch.device("cpu")
    assert list(data._prefetch(iter(range(5)), 2, cpu)) == [0, 1, 2, 3, 4]

    def failing():
        yield 1
        raise ValueError("damaged")

    got = []
    with pytest.raises(ValueError, match="damaged"):
        got.extend(data._prefetch(failing(), 2, cpu))  # keeps what came before the error
    assert got == [1]

    produced = []

    def endless():
        for i in range(10_000):
            produced.append(i)
            yield i

    early = data._prefetch(endless(), 2, cpu)
    assert [next(early), next(early)] == [0, 1]
    early.close()  # the consumer stops: the producer thread must end, not fill the queue forever
    assert len(produced) < 10
    assert not [t for t in threading.enumerate() if t.name == "prefetch"]
