"""The imgscale console (minimal until the console issue lands)."""

from __future__ import annotations

from textual.app import App, ComposeResult
from textual.widgets import Footer, Header, Static


class ImgscaleApp(App):
    TITLE = "imgscale"
    BINDINGS = [("q", "quit", "Quit")]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("imgscale console", id="body")
        yield Footer()


def main() -> None:
    ImgscaleApp().run()
