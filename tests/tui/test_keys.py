"""The one key table: no key bound twice where it works, and every listed key on the help screen."""

from __future__ import annotations

from tui import keys
from tui.app import ImgscaleApp
from tui.widgets.hostgrid import HostGrid
from tui.widgets.logview import LogView
from tui.widgets.stagetable import StageTable


def names(table) -> list[str]:
    return [name for key in table for name in key.keys.split(",")]


def test_no_key_is_bound_twice_and_no_pane_key_hides_an_app_wide_one():
    app_wide = names(keys.GLOBAL_KEYS)
    assert len(app_wide) == len(set(app_wide))
    for _, table in keys.PANE_KEYS:
        pane = names(table)
        assert len(pane) == len(set(pane))
        assert not set(pane) & set(app_wide)


def test_the_widgets_bind_what_the_table_says():
    for widget, table in (
        (ImgscaleApp, keys.GLOBAL_KEYS),
        (StageTable, keys.STAGE_KEYS),
        (HostGrid, keys.HOST_KEYS),
        (LogView, keys.LOG_KEYS),
    ):
        assert [(b.key, b.action) for b in widget.BINDINGS] == [(k.keys, k.action) for k in table]


def test_help_lists_every_described_key_and_the_actions_pane_every_menu_line():
    helped = {text for _, lines in keys.help_keymap() for _, text in lines}
    every = (*keys.GLOBAL_KEYS, *(k for _, table in keys.PANE_KEYS for k in table))
    assert {k.text for k in every if k.text} == helped
    assert ("launch('train')", "l", "Launch training") in keys.ACTIONS
    assert ("?", "Help: every key") in keys.help_keymap()[0][1]
