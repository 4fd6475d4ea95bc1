"""The log pane draws what its time/host/rank columns do not already say."""

from tui.widgets.logview import shown_text


def test_python_logging_time_and_node_prefix_are_not_repeated():
    line = (
        "2026-11-26 08:55:23,756 Node[0@localhost] Epoch[0] Batch [0-2]\tSpeed: 107.95 samples/sec"
    )
    assert shown_text(line) == "Epoch[0] Batch [0-2]\tSpeed: 107.95 samples/sec".expandtabs(4)


def test_mxnet_cpp_clock_prefix_is_not_repeated():
    line = (
        "[08:55:22] ../src/executor/graph_executor.cc:1991: Subgraph backend MKLDNN is activated."
    )
    assert shown_text(line).startswith("../src/executor/graph_executor.cc:1991:")


def test_other_lines_are_only_made_printable():
    assert shown_text("tick 3 on node1\x1b[0m") == "tick 3 on node1?[0m"
    assert shown_text("[worker] 2026 started") == "[worker] 2026 started"
