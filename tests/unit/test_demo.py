"""The demo dataset: ImageNet's shape and names, photo-like sizes, learnable content, same bytes per seed."""

import hashlib
import io
import re
import tarfile

import pytest

from engine.cli import main
from engine.errors import UserError
from engine.prep.demo import class_counts, make_demo_tar, make_demo_tree

SMALL = {"classes": 4, "images_per_class": (3, 9), "max_side": 48}


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def decode(data):
    import cv2
    import numpy as np

    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) if data else None


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    make_demo_tar(tmp_path / "a.tar", seed=3, corrupt=2, **SMALL)
    make_demo_tar(tmp_path / "b.tar", seed=3, corrupt=2, **SMALL)
    make_demo_tar(tmp_path / "c.tar", seed=4, corrupt=2, **SMALL)
    assert sha(tmp_path / "a.tar") == sha(tmp_path / "b.tar")
    assert sha(tmp_path / "a.tar") != sha(tmp_path / "c.tar")


def test_tar_of_per_class_tars_with_imagenet_names(tmp_path):
    summary = make_demo_tar(tmp_path / "demo.tar", **SMALL)
    with tarfile.open(tmp_path / "demo.tar") as outer:
        names = outer.getnames()
        assert all(re.fullmatch(r"n\d{8}\.tar", n) for n in names)
        with tarfile.open(fileobj=io.BytesIO(outer.extractfile(names[0]).read())) as inner:
            wnid = names[0][:-4]
            assert all(re.fullmatch(rf"{wnid}_\d+\.JPEG", n) for n in inner.getnames())
    assert [w for w, _ in summary.classes] == [n[:-4] for n in names]
    assert summary.images == sum(n for _, n in summary.classes)


def test_tree_matches_the_tar_contents(tmp_path):
    make_demo_tar(tmp_path / "demo.tar", seed=1, corrupt=3, **SMALL)
    summary = make_demo_tree(tmp_path / "tree", seed=1, corrupt=3, **SMALL)
    with tarfile.open(tmp_path / "demo.tar") as outer:
        for member in outer:
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(member).read())) as inner:
                for m in inner:
                    on_disk = tmp_path / "tree" / member.name[:-4] / m.name
                    assert on_disk.read_bytes() == inner.extractfile(m).read()
    assert len(summary.corrupt) == 3


def test_counts_are_uneven_so_a_filter_has_work():
    counts = class_counts(10, (20, 80), seed=0)
    assert min(counts) == 20 and max(counts) == 80 and len(set(counts)) == 10
    assert sum(1 for n in counts if n < 40) >= 3  # a --min-images 40 filter removes some
    assert class_counts(3, [5, 0, 7], seed=0) == [5, 0, 7]
    assert sorted(class_counts(4, 10, seed=0)) == [5, 8, 12, 15]  # M means M/2..3M/2


def test_corrupt_files_do_not_decode_and_good_ones_do(tmp_path):
    summary = make_demo_tree(tmp_path / "tree", seed=2, corrupt=5, **SMALL)
    bad = {tmp_path / "tree" / p for p in summary.corrupt}
    assert any(p.suffix == ".txt" for p in bad) and any(p.stat().st_size == 0 for p in bad)
    for path in (tmp_path / "tree").rglob("*.*"):
        assert (decode(path.read_bytes()) is None) == (path in bad), path


def test_sizes_are_photo_like(tmp_path):
    make_demo_tree(tmp_path / "tree", classes=2, images_per_class=(60, 60), seed=0)
    shapes = [decode(p.read_bytes()).shape[:2] for p in (tmp_path / "tree").rglob("*.JPEG")]
    longest = [max(s) for s in shapes]
    assert sum(1 for n in longest if 450 <= n <= 520) >= 0.7 * len(shapes)  # mostly about 500x375
    assert any(n > 1000 for n in longest) and any(n < 100 for n in longest)
    assert any(h > w for h, w in shapes)  # some portrait


def test_max_side_makes_small_images(tmp_path):
    make_demo_tree(tmp_path / "tree", classes=2, images_per_class=(10, 10), max_side=32)
    assert all(
        max(decode(p.read_bytes()).shape[:2]) <= 32 for p in (tmp_path / "tree").rglob("*.JPEG")
    )


def test_classes_are_learnable_by_a_trivial_classifier(tmp_path):
    """Nearest class mean of a hue histogram (saturated pixels) must beat chance (10%) by far: the
    class signal survives random position, scale and background, so a small CNN has it easy."""
    import cv2
    import numpy as np

    make_demo_tree(tmp_path / "tree", classes=10, images_per_class=(20, 20), seed=5, max_side=64)

    def features(path):
        hsv = cv2.cvtColor(decode(path.read_bytes()), cv2.COLOR_BGR2HSV)
        vivid = (hsv[..., 1] > 150) & (hsv[..., 2] > 100)
        hist = np.bincount(hsv[..., 0][vivid] // 10, minlength=18).astype(float)
        return hist / max(1.0, hist.sum())

    means, test = [], []
    for label, folder in enumerate(sorted((tmp_path / "tree").iterdir())):
        files = sorted(folder.iterdir())
        means.append(np.mean([features(p) for p in files[:10]], axis=0))
        test += [(features(p), label) for p in files[10:]]
    means = np.stack(means)
    hits = sum(int(np.argmin(((means - x) ** 2).sum(axis=1)) == y) for x, y in test)
    assert hits / len(test) > 0.6


def test_tree_refuses_a_non_empty_folder(tmp_path):
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        make_demo_tree(tmp_path / "tree", **SMALL)


def test_cli_writes_a_tar_and_reports_it(tmp_path, capsys):
    rc = main(
        [
            "demo-data",
            str(tmp_path / "d.tar"),
            "--classes",
            "3",
            "--images-per-class",
            "2:4",
            "--max-side",
            "32",
        ]
    )
    assert rc == 0 and tarfile.is_tarfile(tmp_path / "d.tar")
    assert "3 classes, 9 images" in capsys.readouterr().out


def test_cli_bad_range_is_one_clear_line(tmp_path, capsys):
    rc = main(["demo-data", str(tmp_path / "d.tar"), "--images-per-class", "lots"])
    err = capsys.readouterr().err
    assert rc == 2 and "--images-per-class 'lots'" in err and len(err.strip().splitlines()) == 1
