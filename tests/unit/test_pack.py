"""`pack` output matches MXNet's im2rec.py byte for byte where it should, and MXNet reads all of it."""

import io
import json
import os
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest

from engine import recordio
from engine.errors import UserError
from engine.events import SkippedItem, StageProgress
from engine.prep import pack
from engine.prep.pack import PackOptions

pytestmark = pytest.mark.filterwarnings("ignore:tostring:DeprecationWarning")  # inside mxnet 1.9.1
IM2REC = pathlib.Path(sys.prefix) / "lib/python3.11/site-packages/mxnet/tools/im2rec.py"
ENV = dict(os.environ, OMP_NUM_THREADS="1", MXNET_CPU_WORKER_NTHREADS="1")

# Runs im2rec.py's own __main__ once per job (mxnet imported once), then reads our files with MXNet.
DRIVER = r"""
import json, runpy, sys
jobs = json.loads(sys.argv[1])
for argv in jobs["im2rec"]:
    sys.argv = ["im2rec.py"] + argv
    runpy.run_path(jobs["script"], run_name="__main__")
import mxnet as mx
out = {}
for rec, idx, width in jobs["read"]:
    reader = mx.recordio.MXIndexedRecordIO(idx, rec, "r")
    headers = [mx.recordio.unpack(reader.read_idx(k))[0] for k in reader.keys]
    it = mx.io.ImageRecordIter(path_imgrec=rec, data_shape=(3, 16, 16), batch_size=4, preprocess_threads=1,
                               label_width=width)
    labels = []
    for batch in it:
        n = 4 - batch.pad
        labels += batch.label[0].asnumpy()[:n].tolist()
        assert batch.data[0].shape == (4, 3, 16, 16)
    out[rec] = {"keys": reader.keys, "ids": [h.id for h in headers], "labels": labels}
print(json.dumps(out))
"""


def jpeg(width, height, seed=0, quality=90):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(max(2, height // 8), max(2, width // 8), 3), dtype=np.uint8)
    img = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def rotated_jpeg(width, height):
    from PIL import Image

    img = Image.open(io.BytesIO(jpeg(width, height, seed=5)))
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees on display; OpenCV honours it
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif, quality=90)
    return out.getvalue()


def make_images(root: pathlib.Path, sizes) -> list[str]:
    names = []
    for i, (w, h) in enumerate(sizes):
        rel = f"c{i % 3}/img_{i:03d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(jpeg(w, h, seed=i))
        names.append(rel)
    return names


def write_lst(path: pathlib.Path, names, multi=False):
    lines = []
    for i, name in enumerate(names):
        labels = f"{i % 3}.000000\t{(i * 7) % 5}.000000" if multi else f"{i % 3}.000000"
        lines.append(f"{100 + i}\t{labels}\t{name}\n")
    path.write_text("".join(lines))
    return path


SMALL = [(40, 30), (30, 44), (52, 52), (64, 40), (20, 60), (48, 36), (33, 25), (60, 45)]
LARGE = [(400, 300), (300, 420), (260, 260), (500, 180)]


def run_driver(jobs) -> dict:
    jobs["script"] = str(IM2REC)
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(jobs)],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


CASES = {
    # name: (our options, im2rec flags, image sizes, multi-label). --no-reduced-decode (reduced_decode
    # False) is the switch for im2rec's exact bytes; the cases in FASTER only have to be readable.
    "pass-through": (PackOptions(pass_through=True), ["--pass-through"], SMALL, False),
    "resize-up": (
        PackOptions(resize=48, quality=90, reduced_decode=False),
        ["--resize", "48", "--quality", "90"],
        SMALL,
        False,
    ),
    "crop-png": (
        PackOptions(resize=28, center_crop=True, encoding=".png", quality=3),
        ["--resize", "28", "--center-crop", "--encoding", ".png", "--quality", "3"],
        SMALL,
        False,
    ),
    "grey": (PackOptions(color=0, quality=80), ["--color", "0", "--quality", "80"], SMALL, False),
    "pack-label": (
        PackOptions(pack_label=True, resize=32, reduced_decode=False),
        ["--pack-label", "--resize", "32"],
        SMALL,
        True,
    ),
    "large-full-decode": (
        PackOptions(resize=60, reduced_decode=False),
        ["--resize", "60"],
        LARGE,
        False,
    ),
    "yuv-planes": (PackOptions(resize=48, quality=90), ["--resize", "48"], SMALL + LARGE, False),
    "opencv-reduced": (
        PackOptions(resize=60, codec="opencv"),
        ["--resize", "60"],
        SMALL + LARGE,
        False,
    ),
}
FASTER = {"yuv-planes", "opencv-reduced"}  # the default fast paths: MXNet reads them, bytes differ


@pytest.fixture(scope="module")
def compat(tmp_path_factory):
    """Each case packed by im2rec (one process) and by us (two worker processes), plus MXNet's reading."""
    base = tmp_path_factory.mktemp("compat")
    jobs = {"im2rec": [], "read": []}
    for name, (options, flags, sizes, multi) in CASES.items():
        root = base / name / "images"
        names = make_images(root, sizes)
        for side in ("ref", "ours"):
            (base / name / side).mkdir()
            write_lst(base / name / side / "data.lst", names, multi)
        jobs["im2rec"].append(
            [str(base / name / "ref" / "data"), str(root), "--num-thread", "1", *flags]
        )
        result = pack.pack_lists(
            [base / name / "ours" / "data.lst"],
            root,
            PackOptions(**{**options.__dict__, "num_thread": 2}),
        )
        assert result.records == len(sizes) and result.skipped == 0
        jobs["read"].append(
            [
                str(base / name / "ours" / "data.rec"),
                str(base / name / "ours" / "data.idx"),
                2 if multi else 1,
            ]
        )
    return base, run_driver(jobs)


@pytest.mark.mxnet
@pytest.mark.parametrize("case", [c for c in CASES if c not in FASTER])
def test_rec_and_idx_identical_to_im2rec(compat, case):
    base, _ = compat
    for ext in ("rec", "idx"):
        ours = (base / case / "ours" / f"data.{ext}").read_bytes()
        ref = (base / case / "ref" / f"data.{ext}").read_bytes()
        assert ours == ref, f"{case}: data.{ext} differs from im2rec's"


@pytest.mark.mxnet
@pytest.mark.parametrize("case", list(CASES))
def test_mxnet_reads_our_records_by_index_and_with_image_record_iter(compat, case):
    base, read = compat
    got = read[str(base / case / "ours" / "data.rec")]
    count = len(CASES[case][2])
    assert got["keys"] == got["ids"] == [100 + i for i in range(count)]
    if case == "pack-label":  # both labels of each line reach the iterator
        assert got["labels"] == [[float(i % 3), float((i * 7) % 5)] for i in range(count)]
    else:
        assert got["labels"] == [float(i % 3) for i in range(count)]


@pytest.mark.mxnet
def test_we_read_what_im2rec_wrote(compat):
    base, _ = compat
    ref = base / "pack-label" / "ref"
    with recordio.IndexedRecordReader(ref / "data.idx", ref / "data.rec") as reader:
        header, img = recordio.unpack_img(reader.read_idx(103))
    assert header.id == 103 and header.flag == 2 and list(header.label) == [0.0, 1.0]
    assert min(img.shape[:2]) == 32


def test_reduced_decode_keeps_im2rec_geometry(tmp_path):
    root = tmp_path / "images"
    sizes = [(1000, 760), (761, 1003), (800, 800), (1200, 300)]
    names = make_images(root, sizes)
    (root / "rot.jpg").write_bytes(rotated_jpeg(900, 700))
    lst = write_lst(tmp_path / "d.lst", names + ["rot.jpg"])
    pack.pack_lists([lst], root, PackOptions(resize=100, center_crop=False))
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        shapes = [recordio.unpack_img(r)[1].shape[:2] for r in reader]
    # im2rec: the short edge becomes 100 and the long edge is long*100//short, from the full-size image
    assert shapes == [(100, 131), (131, 100), (100, 100), (100, 400), (128, 100)]


def test_no_upscale_stores_small_jpegs_as_they_are_and_still_checks_them(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, [(40, 30), (300, 200), (50, 64)])
    (root / "cut.jpg").write_bytes((root / names[0]).read_bytes()[:300])
    lst = write_lst(tmp_path / "d.lst", names + ["cut.jpg"])
    result = pack.pack_lists([lst], root, PackOptions(resize=64, no_upscale=True))
    assert (result.records, result.skipped) == (3, 1)
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        payloads = [recordio.unpack(r)[1] for r in reader]
    assert payloads[0] == (root / names[0]).read_bytes()  # short edge 30 <= 64: stored as is
    assert payloads[2] == (root / names[2]).read_bytes()  # short edge 50 <= 64
    assert cv2.imdecode(np.frombuffer(payloads[1], np.uint8), 1).shape[:2] == (
        64,
        96,
    )  # 300x200 resized
    assert "truncated JPEG" in (tmp_path / "d.skipped.tsv").read_text()


def test_no_upscale_never_enlarges_what_it_must_re_encode(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    png = cv2.imdecode(np.frombuffer(jpeg(50, 30), np.uint8), 1)
    (root / "small.png").write_bytes(cv2.imencode(".png", png)[1].tobytes())
    (root / "wide.jpg").write_bytes(jpeg(60, 40))
    lst = write_lst(tmp_path / "d.lst", ["small.png", "wide.jpg"])
    pack.pack_lists([lst], root, PackOptions(resize=64, no_upscale=True, center_crop=True))
    with recordio.RecordReader(tmp_path / "d.rec") as reader:
        shapes = [recordio.unpack_img(r)[1].shape[:2] for r in reader]
    assert shapes == [(30, 30), (40, 40)]  # re-encoded (PNG source, crop) but not enlarged to 64


def test_events_report_each_chunk_and_each_skip(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, SMALL[:5])
    (root / "bad.jpg").write_bytes(b"")
    write_lst(tmp_path / "d_0.lst", names[:3])
    write_lst(tmp_path / "d_1.lst", names[3:] + ["bad.jpg"])
    events = []
    result = pack.pack_lists(
        pack.find_lists(tmp_path / "d"), root, PackOptions(num_thread=2), on_event=events.append
    )
    assert [c.rec.name for c in result.chunks] == ["d_0.rec", "d_1.rec"]
    assert (result.records, result.skipped) == (5, 1)
    last = {e.part: e for e in events if isinstance(e, StageProgress)}
    assert (last["d_0"].done, last["d_0"].total) == (3, 3)
    assert (last["d_1"].done, last["d_1"].total, last["d_1"].skipped) == (3, 3, 1)
    assert (last[""].done, last[""].total, last[""].bytes_done) == (
        6,
        6,
        sum(c.rec_bytes for c in result.chunks),
    )
    assert [e.path for e in events if isinstance(e, SkippedItem)] == ["bad.jpg"]


def test_find_lists_follows_im2rec_prefix_rules(tmp_path):
    for name in ("a_0.lst", "a_1.lst", "ab.lst", "b.lst", "a_2.lst.tmp"):
        (tmp_path / name).write_text("")
    assert [p.name for p in pack.find_lists(tmp_path / "a_")] == ["a_0.lst", "a_1.lst"]
    assert [p.name for p in pack.find_lists(tmp_path / "a")] == ["a_0.lst", "a_1.lst", "ab.lst"]
    assert [p.name for p in pack.find_lists(tmp_path)] == ["a_0.lst", "a_1.lst", "ab.lst", "b.lst"]
    with pytest.raises(UserError, match="no .lst file matches"):
        pack.find_lists(tmp_path / "zzz")
    with pytest.raises(UserError, match="does not exist"):
        pack.find_lists(tmp_path / "nowhere" / "x")


@pytest.mark.parametrize(
    "options, flag",
    [
        ({"encoding": ".gif"}, "--encoding"),
        ({"quality": 0}, "--quality"),
        ({"encoding": ".png", "quality": 10}, "--quality"),
        ({"color": 2}, "--color"),
        ({"resize": -1}, "--resize"),
        ({"num_thread": 0}, "--num-thread"),
    ],
)
def test_bad_option_values_name_the_flag(tmp_path, options, flag):
    (tmp_path / "d.lst").write_text("")
    with pytest.raises(UserError, match=flag):
        pack.pack_lists([tmp_path / "d.lst"], tmp_path, PackOptions(**options))


def cli(*argv, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *argv],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=120,
        **kwargs,
        check=False,
    )


def test_cli_pack_packs_every_matching_list_and_errors_are_one_line(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, SMALL[:4])
    write_lst(tmp_path / "d_0.lst", names[:2])
    write_lst(tmp_path / "d_1.lst", names[2:])
    ok = cli("pack", str(tmp_path / "d"), str(root), "--resize", "20", "--num-thread", "2")
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "d_0.rec").exists() and (tmp_path / "d_1.idx").exists()
    for argv, words in (
        (["pack", str(tmp_path / "zz"), str(root)], "no .lst file matches"),
        (["pack", str(tmp_path / "d"), str(tmp_path / "noroot")], "is not a folder"),
        (["pack", str(tmp_path / "d"), str(root), "--encoding", ".bmp"], "--encoding"),
    ):
        bad = cli(*argv)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_wrong_root_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, SMALL[:3])
    lst = write_lst(tmp_path / "d.lst", names)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(UserError, match="none of the first 3 paths"):
        pack.pack_lists([lst, lst], tmp_path / "elsewhere", PackOptions())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.lst", "elsewhere", "images"]
    result = pack.pack_lists([lst, lst], root, PackOptions())  # the same list twice is packed once
    assert len(result.chunks) == 1 and result.records == 3


def test_two_packers_on_different_chunks_at_once_match_one_run(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, SMALL * 3)
    for side in ("one", "two"):
        (tmp_path / side).mkdir()
        write_lst(tmp_path / side / "d_0.lst", names[:12])
        write_lst(tmp_path / side / "d_1.lst", names[12:])
    pack.pack_lists(pack.find_lists(tmp_path / "one" / "d"), root, PackOptions(resize=20))
    argv = ["pack", "--resize", "20", "--num-thread", "1", "--quiet"]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "engine.cli",
                *argv,
                str(tmp_path / "two" / f"d_{i}"),
                str(root),
            ],
            env=ENV,
            stderr=subprocess.PIPE,
        )
        for i in (0, 1)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        proc.stderr.close()
    for name in ("d_0.rec", "d_0.idx", "d_1.rec", "d_1.idx"):
        assert (tmp_path / "two" / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_hosts_flag_hands_the_lists_to_distributed_packing(tmp_path, monkeypatch):
    from engine.cli import main
    from engine.prep import pack_remote as dpack

    calls = []
    monkeypatch.setattr(dpack, "pack_on_hosts", lambda *args: calls.append(args))
    (tmp_path / "d.lst").write_text("")
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1\n")
    assert (
        main(["pack", str(tmp_path / "d"), str(tmp_path), "--hosts", str(hosts), "--resize", "480"])
        == 0
    )
    ((hosts_file, lists, root, options, _sink),) = calls
    assert (hosts_file, lists, root, options.resize) == (
        str(hosts),
        [tmp_path / "d.lst"],
        str(tmp_path),
        480,
    )


def test_worker_killed_mid_batch_is_replaced_and_its_batch_retried(tmp_path):
    import signal

    from engine.prep.pack_pool import Pool
    from engine.prep.pack_worker import Item, Setup

    root = tmp_path / "images"
    names = make_images(root, SMALL[:3])
    items = [Item(i + 1, i, name, (0.0,)) for i, name in enumerate(names)]
    pool = Pool(1, Setup(str(root), PackOptions(pass_through=True)))
    try:
        victim = pool.workers[0].proc
        os.kill(victim.pid, signal.SIGSTOP)  # it cannot answer before it dies
        pool.submit("batch", items)
        os.kill(victim.pid, signal.SIGKILL)
        got = {}
        while pool.busy():
            got.update(pool.collect())
        assert pool.workers[0].proc.pid != victim.pid
        assert [recordio.unpack(_unframe(r))[0].id for r in got["batch"]] == [0, 1, 2]
    finally:
        pool.close()


def test_worker_that_died_while_idle_is_replaced_on_next_batch(tmp_path):
    import signal

    from engine.prep.pack_pool import Pool
    from engine.prep.pack_worker import Item, Setup

    root = tmp_path / "images"
    names = make_images(root, SMALL[:2])
    pool = Pool(1, Setup(str(root), PackOptions(pass_through=True)))
    try:
        victim = pool.workers[0].proc
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        pool.submit("batch", [Item(1, 7, names[0], (0.0,)), Item(2, 8, names[1], (1.0,))])
        got = {}
        while pool.busy():
            got.update(pool.collect())
        assert [recordio.unpack(_unframe(r))[0].id for r in got["batch"]] == [7, 8]
    finally:
        pool.close()


def test_the_last_batches_go_to_whichever_worker_is_free(tmp_path):
    from engine.prep.pack_pool import DEPTH, TAIL_DEPTH, Pool
    from engine.prep.pack_worker import Setup

    pool = Pool(2, Setup(str(tmp_path), PackOptions(pass_through=True)))
    try:
        assert pool.room(unsent=1000) == 2 * DEPTH
        pool.workers[0].held.extend([("a", [])] * 3)  # as if three batches were in flight there
        assert pool.room(unsent=1000) == 2 * DEPTH - 3
        assert pool.room(unsent=2 * DEPTH) == 2 * TAIL_DEPTH - 3 < 2
        pool.workers[0].held.clear()
    finally:
        pool.close()


def test_a_worker_sends_every_result_before_it_exits_at_end_of_tasks(tmp_path):
    """Workers skip the interpreter's teardown; nothing they computed may be lost to that."""
    from engine.prep.pack_pool import Pool
    from engine.prep.pack_worker import Item, Setup

    root = tmp_path / "images"
    names = make_images(root, SMALL)
    pool = Pool(1, Setup(str(root), PackOptions(resize=64)))
    worker = pool.workers[0]
    try:
        for n, name in enumerate(names):
            worker.send(n, [Item(n + 1, n, name, (0.0,))])
        worker.tasks.close()  # end of tasks right behind the last batch
        got = {}
        while pool.busy():
            got.update(pool.collect())
        assert sorted(got) == list(range(len(names)))
        assert all(isinstance(r[0], bytes) for r in got.values())
        assert worker.proc.wait(timeout=30) == 0
    finally:
        pool.close()


def test_closing_the_pool_tells_every_worker_before_waiting_for_any(tmp_path, monkeypatch):
    from engine.prep import pack_pool
    from engine.prep.pack_worker import Setup

    pool = pack_pool.Pool(3, Setup(str(tmp_path), PackOptions(pass_through=True)))
    told = []
    real_stop = pack_pool.Worker.stop

    def stop(worker):
        told.append([w.tasks.closed for w in pool.workers])
        real_stop(worker)

    monkeypatch.setattr(pack_pool.Worker, "stop", stop)
    pool.close()
    assert told and all(all(flags) for flags in told)
    assert [w.proc.returncode for w in pool.workers] == [0, 0, 0]


def test_records_are_handed_to_the_disk_in_order_as_they_grow(tmp_path, monkeypatch):
    root = tmp_path / "images"
    names = make_images(root, SMALL * 5)
    lst = write_lst(tmp_path / "d.lst", names)
    asked = []
    monkeypatch.setattr(pack, "WRITEBACK_BYTES", 1)  # every batch
    monkeypatch.setattr(
        pack, "start_writeback", lambda fd, start, length: asked.append((start, length))
    )
    pack.pack_lists([lst], root, PackOptions(resize=32))
    size = (tmp_path / "d.rec").stat().st_size
    assert len(asked) == -(-len(names) // pack.BATCH_SIZE)
    assert [start for start, _ in asked] == [0, *(s + n for s, n in asked[:-1])]
    assert sum(n for _, n in asked) == size


class _BytesReader(recordio.RecordReader):
    def __init__(self, data: bytes) -> None:
        self.path, self.file = "<bytes>", io.BytesIO(data)


def _unframe(framed: bytes) -> bytes:
    return _BytesReader(framed).read()


def test_pack_does_not_touch_inputs(tmp_path):
    root = tmp_path / "images"
    names = make_images(root, SMALL[:3])
    before = {n: (root / n).read_bytes() for n in names}
    lst = write_lst(tmp_path / "d.lst", names)
    lst_bytes = lst.read_bytes()
    pack.pack_lists([lst], root, PackOptions(resize=16))
    assert {n: (root / n).read_bytes() for n in names} == before and lst.read_bytes() == lst_bytes
