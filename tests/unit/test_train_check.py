"""Pre-flight findings: pure checks over gathered facts, and the gathering on a real folder layout."""

import argparse
import struct
from dataclasses import replace

from engine.train.check import (
    ERROR,
    INFO,
    WARNING,
    check_batch,
    check_data_dirs,
    check_disk,
    check_gpus,
    check_hosts,
    check_mxnet,
    check_num_classes,
    check_num_examples,
    check_ports,
    check_scale,
    run_checks,
)
from engine.train.facts import Facts, gather_facts, image_size, port_busy
from engine.train.options import TrainOptions, build_train_parser


def levels(findings):
    return [f.level for f in findings]


def test_num_classes_against_the_label_map():
    (f,) = check_num_classes(
        Facts(
            train=TrainOptions(num_classes=1000), label_map="d/x_labels.txt", label_map_classes=998
        )
    )
    assert f.level == ERROR and f.change == "set --num-classes 998"
    assert levels(
        check_num_classes(
            Facts(train=TrainOptions(num_classes=998), label_map="m", label_map_classes=998)
        )
    ) == [INFO]


def test_without_a_map_a_label_beyond_num_classes_is_still_an_error():
    (f,) = check_num_classes(Facts(train=TrainOptions(num_classes=10), max_label=10))
    assert f.level == ERROR and f.change == "set --num-classes 11"


def test_num_examples_against_the_packed_count():
    (f,) = check_num_examples(
        Facts(
            train=TrainOptions(num_examples=1281167),
            examples_found=1200000,
            example_source="8 index files",
        )
    )
    assert (
        f.level == ERROR and f.change == "set --num-examples 1200000" and "learning-rate" in f.what
    )
    (f,) = check_num_examples(
        Facts(train=TrainOptions(num_examples=1000), examples_found=999, example_source="x")
    )
    assert f.level == WARNING


def test_tutorial_batch_8192_on_one_gpu_worker_warns_per_gpu():
    findings = check_batch(Facts(train=TrainOptions(batch_size=8192, gpus=[0]), num_workers=1))
    assert any(f.level == WARNING and "per-worker batch" in f.what for f in findings)
    info = next(f for f in findings if f.level == INFO)
    assert "8192 per GPU" in info.what


def test_batch_not_divisible_by_gpus_and_tiny_per_gpu_batch():
    (f,) = check_batch(Facts(train=TrainOptions(batch_size=100, gpus=[0, 1, 2])))
    assert f.level == ERROR and f.change == "use --batch-size 99"
    assert WARNING in levels(
        check_batch(Facts(train=TrainOptions(batch_size=16, gpus=[0, 1, 2, 3], num_examples=10000)))
    )


def test_min_random_scale_for_data_packed_at_480():
    facts = Facts(
        train=TrainOptions(image_shape=[3, 224, 224]), packed_edge=480, packed_edge_source="x"
    )
    (f,) = check_scale(facts)
    assert f.level == WARNING and "--min-random-scale 0.533" in f.change
    facts.train = replace(facts.train, min_random_scale=0.4)  # 192 pixels < 224
    (f,) = check_scale(facts)
    assert f.level == ERROR and "0.467" in f.change
    facts.train = replace(facts.train, min_random_scale=0.533)
    assert check_scale(facts) == []


def test_network_input_too_small():
    (f,) = check_scale(Facts(train=TrainOptions(network="inception-v3", image_shape=[3, 224, 224])))
    assert f.level == ERROR and "299" in f.change


def test_stray_files_and_missing_data():
    findings = check_data_dirs(
        Facts(stray={"/d/train": ["a.idx", "b.lst"]}, missing_data=["/d/val"])
    )
    assert levels(findings) == [ERROR, WARNING] and "a.idx, b.lst" in findings[1].what


def test_workers_against_slots_and_kvstore():
    hosts = [("a", 2, None), ("b", 2, None)]
    (f,) = check_hosts(
        Facts(train=TrainOptions(kv_store="dist_sync"), hosts=hosts, num_workers=5, num_servers=2)
    )
    assert f.level == ERROR and f.change.startswith("use -n 4")
    (f,) = check_hosts(Facts(train=TrainOptions(kv_store="device"), num_workers=4))
    assert f.level == ERROR and "dist_sync" in f.change
    (f,) = check_hosts(
        Facts(
            train=TrainOptions(kv_store="dist_sync"),
            hosts=[("a", None, None)],
            num_workers=2,
            num_servers=1,
        )
    )
    assert f.level == WARNING


def test_gpus_against_each_hosts_gpus():
    facts = Facts(
        train=TrainOptions(gpus=[0, 1, 2, 3]),
        hosts=[("a", None, [0, 1])],
        host_gpu_counts={"b": 2, "c": None},
    )
    findings = check_gpus(facts)
    assert [f.level for f in findings] == [ERROR, ERROR, INFO]
    assert "gpus=0,1 on a" in findings[0].what and "b has GPUs 0-1" in findings[1].what
    (f,) = check_gpus(Facts(train=TrainOptions(gpus=[]), host_gpu_counts={"a": 8}))
    assert f.level == WARNING and f.change == "add --gpus 0,1,2,3,4,5,6,7"


def test_mxnet_builds_must_match_and_have_dist_kvstore():
    facts = Facts(
        train=TrainOptions(kv_store="dist_sync"),
        host_mxnet={
            "a": "1.9.1 dist_kvstore=yes cuda=yes",
            "b": "1.8.0 dist_kvstore=no cuda=yes",
            "c": None,
        },
    )
    whats = [f.what for f in check_mxnet(facts)]
    assert any("c: mxnet not importable" in w for w in whats)
    assert any("different mxnet builds" in w for w in whats)
    assert any("b: mxnet built without the distributed kvstore" in w for w in whats)


def test_busy_port_and_disk():
    assert levels(check_ports(Facts(busy_ports=[9091]))) == [ERROR]
    (f,) = check_disk(
        Facts(
            train=TrainOptions(num_epochs=80, keep_checkpoints=0),
            checkpoint_dir="/ck",
            free_disk_bytes=1 << 30,
        )
    )
    assert f.level == ERROR and "GiB" in f.what


def test_errors_come_first():
    findings = run_checks(
        Facts(train=TrainOptions(num_classes=5), label_map="m", label_map_classes=6)
    )
    assert findings[0].level == ERROR


def test_port_busy_sees_a_listening_socket():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert port_busy(s.getsockname()[1])


def test_image_size_from_jpeg_and_png_headers():
    import cv2
    import numpy as np

    img = np.zeros((480, 640, 3), np.uint8)
    assert image_size(cv2.imencode(".jpg", img)[1].tobytes()) == (640, 480)
    assert image_size(cv2.imencode(".png", img)[1].tobytes()) == (640, 480)


def _record(payload: bytes) -> bytes:
    pad = b"\0" * ((4 - len(payload) % 4) % 4)
    return struct.pack("<II", 0xCED7230A, len(payload)) + payload + pad


def test_gather_reads_lists_label_map_packed_edge_and_stray_files(tmp_path):
    import cv2
    import numpy as np

    train, lists = tmp_path / "train", tmp_path / "lists"
    train.mkdir()
    lists.mkdir()
    jpeg = cv2.imencode(".jpg", np.zeros((480, 600, 3), np.uint8))[1].tobytes()
    header = struct.pack("<IfQQ", 0, 1.0, 0, 0)
    (train / "d_0.rec").write_bytes(_record(header + jpeg) * 2)
    (train / "d_0.idx").write_text("0\t0\n1\t100\n")  # a stray index in the data folder
    (lists / "d_0.lst").write_text(
        "0\t0.000000\ta/1.jpg\n1\t4.000000\tb/2.jpg\n2\t1.000000\tc/3.jpg\n"
    )
    (lists / "d_labels.txt").write_text("".join(f"c{i}\t{i}\n" for i in range(5)))
    args = build_train_parser(argparse.ArgumentParser()).parse_args(
        ["--data-train", str(train), "--num-classes", "5", "--num-examples", "2"]
    )
    facts = gather_facts(args, probe_local=False)
    assert facts.label_map_classes == 5 and facts.label_map.endswith("d_labels.txt")
    assert facts.examples_found == 2  # the .idx beside the chunk counts what was really packed
    assert facts.packed_edge == 480 and facts.stray == {str(train): ["d_0.idx"]}


def test_preflight_of_a_training_command_line(tmp_path):
    from engine.train.check import preflight_argv

    hosts = tmp_path / "hosts"
    hosts.write_text("node-a slots=2\nnode-b slots=2\n")
    argv = ["--benchmark", "--batch-size", "64", "--gpus", "0,1", "--kv-store", "dist_sync"]
    findings = preflight_argv(argv, hosts=str(hosts), num_workers=6, num_servers=2)
    assert any(
        f.level == ERROR and "-n 6 workers but the hosts offer 4 slots" in f.what for f in findings
    )
    info = next(f for f in findings if f.what.startswith("batch:"))
    assert "32 per GPU, 64 per worker" in info.what and "384 global over 6 worker(s)" in info.what


def test_torch_ranks_need_no_dist_kvstore_and_no_servers():
    mxnet = Facts(train=TrainOptions(kv_store="device"), num_workers=2, num_servers=0)
    torch = Facts(
        train=TrainOptions(kv_store="device", engine="torch"), num_workers=2, num_servers=0
    )
    assert any("train separately" in f.what for f in check_hosts(mxnet))
    assert check_hosts(torch) == []


def test_the_torch_engine_takes_inputs_smaller_than_mxnets_symbols_need():
    assert (
        check_scale(
            Facts(train=TrainOptions(network="resnet", image_shape=[3, 16, 16], engine="torch"))
        )
        == []
    )
    (f,) = check_scale(
        Facts(train=TrainOptions(network="resnet", image_shape=[3, 16, 16], engine="mxnet"))
    )
    assert "too small for resnet" in f.what
