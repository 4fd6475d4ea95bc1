"""A form to edit a stage's (or training's) options: one field per option, typed values checked by the engine."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label


class OptionsForm(ModalScreen[dict[str, str] | None]):
    """ctrl+s (or enter in the last field) saves the changed fields; escape cancels."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str, options: dict[str, Any]) -> None:
        super().__init__()
        self.title_text = title
        self.options = options

    def compose(self) -> ComposeResult:
        dialog = Vertical(id="dialog")
        dialog.border_title = self.title_text
        dialog.border_subtitle = "tab: next field   ctrl+s: save   esc: cancel"
        with dialog:
            with VerticalScroll(id="form-fields"):
                for key, value in self.options.items():
                    with Horizontal(classes="form-row"):
                        yield Label(key, classes="form-label")
                        yield Input(value=_text(value), id=f"opt-{key}", classes="form-input")

    def changed(self) -> dict[str, str]:
        out = {}
        for key, value in self.options.items():
            text = self.query_one(f"#opt-{key}", Input).value
            if text != _text(value):
                out[key] = text
        return out

    def on_input_submitted(self, event: Input.Submitted) -> None:
        inputs = list(self.query(Input))
        if event.input is inputs[-1]:
            self.action_save()
        else:
            self.focus_next()

    def action_save(self) -> None:
        self.dismiss(self.changed())

    def action_cancel(self) -> None:
        self.dismiss(None)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)
