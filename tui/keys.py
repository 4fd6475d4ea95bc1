"""Every key of the console in one table: the app's and the panes' bindings, the footer, the help
screen (`?`), the Actions pane and the command palette are all derived from it."""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding


@dataclass(frozen=True)
class Key:
    keys: str  # Textual key names, comma-separated
    action: str
    text: str = ""  # what it does, on the help screen ("" : not listed), in the palette, as tooltip
    name: str = ""  # the binding's short name in the footer (default: text)
    show: bool = False  # in the footer
    menu: str = ""  # its line on the Actions pane ("" : not there)
    label: str = ""  # the keys as the help screen writes them (default: from keys)

    def binding(self, tooltip: bool = False) -> Binding:
        description = self.name or self.text
        return Binding(
            self.keys,
            self.action,
            description,
            show=self.show,
            tooltip=self.text if tooltip else "",
        )

    @property
    def shown_keys(self) -> str:
        return self.label or key_label(self.keys)


def key_label(key: str) -> str:
    return {"question_mark": "?"}.get(key, key)


# The app-wide keys: they work on every pane.
GLOBAL_KEYS = (
    Key("1", "pane('stages')", "Stages pane"),
    Key("2", "pane('hosts')", "Hosts pane"),
    Key("3", "pane('log')", "Training log pane"),
    Key("4", "pane('actions')", "Actions pane"),
    # pane keys are on the tabs and pane titles; ? and q have their own corner
    Key(
        "l",
        "launch('train')",
        "Launch training (shows the plan first)",
        name="Launch",
        show=True,
        menu="Launch training",
    ),
    Key("t", "stop_job", "Stop the job on every host", menu="Stop the job"),
    Key(
        "R",
        "relaunch",
        "Relaunch the failed job from its newest checkpoint",
        menu="Relaunch failed job",
    ),
    Key(
        "K",
        "kill_leftovers",
        "Kill leftover processes on every host",
        menu="Kill leftovers on every host",
    ),
    Key(
        "m",
        "toggle_mirror",
        "Toggle MXNET_BACKWARD_DO_MIRROR for the next launch",
        menu="Toggle MXNET_BACKWARD_DO_MIRROR",
    ),
    Key("b", "launch('benchmark')", "Run --benchmark (synthetic data)", menu="Run --benchmark"),
    Key("i", "launch('test-io')", "Run --test-io (data only)", menu="Run --test-io"),
    Key("n", "data_nthreads", "Change --data-nthreads", menu="Change --data-nthreads"),
    Key("T", "edit_train", "Edit training options", menu="Edit training options"),
    Key("d", "doctor", "Doctor: IO-, compute- or network-bound?", menu="Doctor"),
    Key(
        "S",
        "scaling",
        "Scaling: images/s against GPUs, speedup against ideal",
        menu="Scaling sweep",
    ),
    Key(
        "E",
        "export",
        "Export the hosts grid and the job's images/s history (CSV, JSON)",
        menu="Export grid and img/s history",
    ),
    Key("question_mark", "help", "Help: every key"),
    Key("q", "quit", "Quit (jobs keep running)"),
)

STAGE_KEYS = (
    Key("up,k", "move(-1)", "select a stage", name="Up", label="↑/↓ j/k"),
    Key("down,j", "move(1)", name="Down"),
    Key("s,enter", "stage('start')", "start the stage", name="Start", show=True, label="s, enter"),
    Key("r", "stage('resume')", "resume it", name="Resume", show=True),
    Key("x", "stage('stop')", "stop it (resumable)", name="Stop", show=True),
    Key("u", "stage('undo')", "undo it (filter, split)", name="Undo", show=True),
    Key("e", "stage('edit')", "edit its options", name="Options", show=True),
    Key("a", "stage('all')", "run every stage that is not done", name="Run all", show=True),
)

HOST_KEYS = (
    Key("o", "cycle_sort", "sort: name, rate, util, state", name="Sort", show=True),
    Key(
        "slash",
        "filter",
        "filter hosts (name, down, failed, straggler)",
        name="Filter",
        show=True,
        label="/",
    ),
    Key("c", "toggle_compact", "compact / full rows", name="Compact", show=True),
    Key("j,down", "scroll_down", "scroll", name="Down", label="↑/↓ pgup/pgdn"),
    Key("k,up", "scroll_up", name="Up"),
    Key("pagedown", "page_down"),
    Key("pageup", "page_up"),
)

LOG_KEYS = (
    Key("f", "toggle_follow", "follow / pause", name="Follow/pause", show=True),
    Key(
        "slash",
        "filter",
        "filter: host:X rank:N role:R level:L words",
        name="Filter",
        show=True,
        label="/",
    ),
    Key("v", "cycle_level", "minimum level", name="Level", show=True),
    Key("g,home", "top", "top / bottom (G follows)", name="Top", label="g / G"),
    Key("G,end", "bottom", name="Bottom"),
    Key("j,down", "scroll_down"),
    Key("k,up", "scroll_up"),
    Key("pagedown", "page_down"),
    Key("pageup", "page_up"),
)

PANE_KEYS = (("Stages pane", STAGE_KEYS), ("Hosts pane", HOST_KEYS), ("Log pane", LOG_KEYS))

# The Actions pane: (action, key, line), in the table's order.
ACTIONS = tuple((k.action, k.keys, k.menu) for k in GLOBAL_KEYS if k.menu)


def bindings(
    keys: tuple[Key, ...], tooltips: bool = False
) -> list[Binding | tuple[str, str] | tuple[str, str, str]]:
    return [k.binding(tooltips) for k in keys]


def help_keymap() -> list[tuple[str, list[tuple[str, str]]]]:
    """The help screen's groups: (where, [(keys, what they do), …])."""
    return [
        (group, [(k.shown_keys, k.text) for k in keys if k.text])
        for group, keys in (("Everywhere", GLOBAL_KEYS), *PANE_KEYS)
    ]
