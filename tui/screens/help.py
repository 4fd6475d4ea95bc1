"""The `?` screen: every key of the console, grouped by where it works."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,enter", "close", "Close")]

    def __init__(self, keymap: list[tuple[str, list[tuple[str, str]]]]) -> None:
        super().__init__()
        self.keymap = keymap

    def compose(self) -> ComposeResult:
        dialog = Vertical(id="dialog", classes="-wide")
        dialog.border_title = "Keys (ctrl+p: command palette)"
        dialog.border_subtitle = "↑/↓ scroll   esc: close"
        with dialog:
            with VerticalScroll(id="dialog-body"):
                yield Static(help_text(self.keymap), markup=False)

    def action_close(self) -> None:
        self.dismiss(None)


def help_text(keymap: list[tuple[str, list[tuple[str, str]]]]) -> str:
    lines = []
    for group, keys in keymap:
        lines.append(group)
        lines.extend(f"  {key:<10} {what}" for key, what in keys)
        lines.append("")
    return "\n".join(lines).rstrip()
