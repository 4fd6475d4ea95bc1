"""A modal that shows a text (a launch plan, a doctor's verdict, a warning) and asks yes or no."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static


class ConfirmScreen(ModalScreen[bool]):
    """y/enter confirms, n/escape cancels; with ``ask=False`` any of them just closes it."""

    BINDINGS = [
        Binding("y,enter", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, title: str, body: str, ask: bool = True, danger: bool = False) -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.ask = ask
        self.danger = danger

    def compose(self) -> ComposeResult:
        # Title and keys sit on the border, so a long body (scrolling) never hides them on 80x24.
        dialog = Vertical(id="dialog", classes="-danger" if self.danger else "")
        dialog.border_title = self.title_text
        dialog.border_subtitle = "y/enter: yes   n/esc: no" if self.ask else "enter/esc: close"
        with dialog:
            with VerticalScroll(id="dialog-body"):
                yield Static(self.body, markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes and self.ask)
