"""A form to edit a stage's (or training's) options: one field per option, typed values checked by the engine."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from engine.api import FormField


class OptionsForm(ModalScreen[dict[str, str] | None]):
    """ctrl+s (or enter in the last field) saves the changed fields; escape cancels.

    The fields come from the engine (``Session.option_fields``): each input's tooltip and the
    line under the form give the option's help, default and bounds."""

    BINDINGS = [
        Binding("ctrl+s", "save", "Save"),
        Binding("escape", "cancel", "Cancel"),
    ]

    def __init__(self, title: str, fields: tuple[FormField, ...]) -> None:
        super().__init__()
        self.title_text = title
        self.fields = fields

    def compose(self) -> ComposeResult:
        dialog = Vertical(id="dialog")
        dialog.border_title = self.title_text
        dialog.border_subtitle = "tab: next field   ctrl+s: save   esc: cancel"
        with dialog:
            with VerticalScroll(id="form-fields"):
                for field in self.fields:
                    with Horizontal(classes="form-row"):
                        yield Label(field.name, classes="form-label")
                        yield Input(
                            value=field.value,
                            placeholder=field.default,
                            tooltip=describe(field),
                            id=f"opt-{field.name}",
                            classes="form-input",
                        )
            yield Label("", id="form-help")

    def on_descendant_focus(self) -> None:
        focused = self.focused
        field = next((f for f in self.fields if focused and focused.id == f"opt-{f.name}"), None)
        self.query_one("#form-help", Label).update(describe(field) if field else "")

    def changed(self) -> dict[str, str]:
        out = {}
        for field in self.fields:
            text = self.query_one(f"#opt-{field.name}", Input).value
            if text != field.value:
                out[field.name] = text
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


def describe(field: FormField) -> str:
    """One line: help, choices or bounds, and the default."""
    parts = [field.help] if field.help else []
    if field.choices:
        parts.append("one of " + ", ".join(field.choices))
    elif field.low is not None or field.high is not None:
        low = "" if field.low is None else f"{field.low:g}"
        high = "" if field.high is None else f"{field.high:g}"
        parts.append(f"{low}..{high}")
    if field.default:
        parts.append(f"default {field.default}")
    return " · ".join(parts)
