"""`pack --device cuda`: a clear refusal without a GPU codec, and the CPU side (reading, batching,
framing, fallbacks) run with a stand-in codec that behaves like torchvision.io's decode/encode_jpeg."""

import os
import subprocess
import sys
from dataclasses import replace

import cv2
import numpy as np
import pytest
from test_pack import jpeg, make_images, rotated_jpeg, write_lst

from engine import recordio
from engine.errors import UserError
from engine.prep import pack, pack_gpu
from engine.prep.pack import PackOptions
from engine.prep.pack_worker import Item

torch = pytest.importorskip("torch", reason="the stand-in codec works on torch tensors")
REFUSED = b"\xff\xfe\x00\x10NVJPEG-REFUSES"  # a COM segment the stand-in decoder rejects


def _as_list(value):
    return (True, [value]) if isinstance(value, torch.Tensor) else (False, list(value))


def stand_in_decode_jpeg(input, mode=None, device="cpu"):  # noqa: A002 - torchvision's name
    """torchvision.io.decode_jpeg's contract: CHW RGB uint8 tensors; raises for the whole batch."""
    single, tensors = _as_list(input)
    out = []
    for tensor in tensors:
        data = tensor.numpy().tobytes()
        img = None if REFUSED in data else cv2.imdecode(np.frombuffer(data, np.uint8), 1)
        if img is None:
            raise RuntimeError("nvjpegDecode failed: corrupt or unsupported data")
        out.append(torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1).contiguous())
    return out[0] if single else out


def stand_in_encode_jpeg(input, quality=75):  # noqa: A002 - torchvision's name
    single, images = _as_list(input)
    out = []
    for img in images:
        bgr = img.permute(1, 2, 0).numpy()[:, :, ::-1]
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
        out.append(torch.from_numpy(buf.ravel().copy()))
    return out[0] if single else out


STAND_IN = pack_gpu.Codec(torch, stand_in_decode_jpeg, stand_in_encode_jpeg, "RGB", "cpu")


def refused_jpeg(width, height) -> bytes:
    data = jpeg(width, height, seed=9)
    return data[:2] + REFUSED + data[2:]


@pytest.fixture
def odd_tree(tmp_path):
    """Sound JPEGs, and each thing the GPU path must hand elsewhere or report."""
    root = tmp_path / "images"
    names = make_images(root, [(90, 60), (40, 30), (64, 100), (70, 70), (300, 200)] * 3)
    extra = {
        "rot.jpg": rotated_jpeg(90, 70),
        "refused.jpg": refused_jpeg(80, 60),
        "cut.jpg": jpeg(80, 60)[:200],
        "small.png": cv2.imencode(".png", np.full((30, 40, 3), 90, np.uint8))[1].tobytes(),
    }
    for name, data in extra.items():
        (root / name).write_bytes(data)
    return root, names[:7] + list(extra) + ["missing.jpg"] + names[7:]


def packed(folder, root, names, options, **kwargs):
    lst = write_lst(folder / "d.lst", names)
    result = pack.pack_lists([lst], root, options, **kwargs)
    with recordio.RecordReader(folder / "d.rec") as reader:
        records = [(*recordio.unpack_img(r), recordio.unpack(r)[1]) for r in reader]
    idx_keys = [line.split("\t")[0] for line in (folder / "d.idx").read_text().splitlines()]
    return result, records, idx_keys, (folder / "d.skipped.tsv").read_text()


@pytest.mark.parametrize("no_upscale", [False, True])
def test_stand_in_gpu_codec_gives_the_cpu_paths_records_order_index_and_skips(
    tmp_path, odd_tree, monkeypatch, no_upscale
):
    root, names = odd_tree
    monkeypatch.setattr(pack, "BATCH_SIZE", 8)
    monkeypatch.setattr(pack_gpu, "GPU_BATCH", 12)  # list batches of 8, 8, 4: GPU batches 8, 12
    options = PackOptions(resize=48, quality=90, num_thread=2, no_upscale=no_upscale)
    (tmp_path / "cpu").mkdir()
    (tmp_path / "gpu").mkdir()
    cpu = packed(tmp_path / "cpu", root, names, options)
    encoded = []

    def counting_encode(images, quality=75):
        encoded.append(len(images))
        return stand_in_encode_jpeg(images, quality)

    gpu = packed(
        tmp_path / "gpu",
        root,
        names,
        PackOptions(**{**options.__dict__, "device": "cuda"}),
        gpu_codec=pack_gpu.Codec(torch, stand_in_decode_jpeg, counting_encode, "RGB", "cpu"),
    )
    # the sound JPEGs that need re-encoding went through the codec in two batches of at most 12
    assert sum(encoded) == (12 if no_upscale else 15) and len(encoded) == 2 and max(encoded) <= 12
    assert (
        (gpu[0].records, gpu[0].skipped) == (cpu[0].records, cpu[0].skipped) == (len(names) - 2, 2)
    )
    assert gpu[2] == cpu[2]  # the .idx keys, in .lst order
    assert gpu[3] == cpu[3]  # the same skip report: cut.jpg and missing.jpg, same reasons
    packed_names = [n for n in names if n not in ("cut.jpg", "missing.jpg")]
    for name, (g_header, g_img, g_bytes), (c_header, c_img, c_bytes) in zip(
        packed_names, gpu[1], cpu[1]
    ):
        assert (g_header.id, g_header.label) == (c_header.id, c_header.label)
        assert g_img.shape == c_img.shape  # im2rec's geometry, also for rotated and refused images
        if name in ("rot.jpg", "refused.jpg", "small.png"):  # handed to the CPU path: its bytes
            assert g_bytes == c_bytes, name
    identity = json_identity(tmp_path / "gpu" / "d.pack.json")
    assert identity["options"]["device"] == "cuda"  # resuming on the CPU would start afresh


def json_identity(path):
    import json

    return json.loads(path.read_text())


def test_a_batch_the_gpu_refuses_is_decoded_image_by_image():
    good = torch.frombuffer(bytearray(jpeg(40, 30)), dtype=torch.uint8)
    bad = torch.frombuffer(bytearray(refused_jpeg(40, 30)), dtype=torch.uint8)
    with pytest.raises(RuntimeError):
        stand_in_decode_jpeg([good, bad])
    entries = [
        pack_gpu.Entry(Item(1, 1, "a", (0.0,)), data=bytes(t.numpy())) for t in (good, bad, good)
    ]
    decoded = pack_gpu.decode_all(STAND_IN, entries)
    assert [None if d is None else tuple(d.shape) for d in decoded] == [
        (3, 30, 40),
        None,
        (3, 30, 40),
    ]


def test_gpu_resize_follows_im2rec_geometry():
    img = torch.zeros((3, 75, 100), dtype=torch.uint8)
    opts = PackOptions(center_crop=False, resize=48, no_upscale=False)
    assert tuple(pack_gpu.resize(STAND_IN, img, opts, (75, 100)).shape) == (3, 48, 64)
    crop = replace(opts, center_crop=True)
    assert tuple(pack_gpu.resize(STAND_IN, img, crop, (75, 100)).shape) == (3, 48, 48)
    keep = replace(opts, resize=80, no_upscale=True)
    assert tuple(pack_gpu.resize(STAND_IN, img, keep, (75, 100)).shape) == (3, 75, 100)


def test_device_cuda_without_a_gpu_is_refused_in_one_line_before_writing(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, [(40, 30)])
    write_lst(tmp_path / "d.lst", names)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "engine.cli",
            "pack",
            str(tmp_path / "d"),
            str(root),
            "--device",
            "cuda",
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, CUDA_VISIBLE_DEVICES=""),
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "--device cuda:" in lines[0] and "without --device" in lines[0]
    assert not any(p.suffix in (".rec", ".idx", ".part") for p in tmp_path.iterdir())


def test_unknown_device_names_the_flag(tmp_path):
    with pytest.raises(UserError, match="--device tpu"):
        PackOptions(device="tpu")
