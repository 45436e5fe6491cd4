"""Help lists the keys of the screen it was opened from; the command palette has every action."""

from __future__ import annotations

from textual.widgets import Static

from workbench.tui.app import WorkbenchApp
from workbench.tui.screens.help import HelpScreen
from workbench.tui.screens.runs import RunsScreen

from .fixed_runs import FIXED_NOW


async def test_help_lists_the_runs_screen_keys_and_closes(fixed_runs):
    app = WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = str(app.screen.query_one("#help-text", Static).render())
        for binding in RunsScreen.BINDINGS:
            assert binding.description in text
        await pilot.press("escape")
        assert isinstance(app.screen, RunsScreen)


async def test_every_described_binding_is_a_palette_command(fixed_runs):
    app = WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        titles = {c.title for c in app.get_system_commands(app.screen)}
        assert {b.description for b in RunsScreen.BINDINGS if b.action != "app.quit"} <= titles
        assert "Help" in titles


async def test_palette_command_runs_the_action(fixed_runs):
    app = WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(100, 32)) as pilot:
        await pilot.pause()
        command = next(c for c in app.get_system_commands(app.screen) if c.title == "Mark")
        command.callback()
        await pilot.pause()
        assert app.screen.marked  # the highlighted run got marked, as with the space key


async def test_help_on_the_attack_panel_lists_the_gallery_keys_too(fixed_runs):
    from workbench.tui.screens.attack import AttackScreen
    from workbench.tui.widgets.example_gallery import ExampleGallery

    from .test_attack_panel import attack_help_lines

    app = WorkbenchApp(fixed_runs, clock=lambda: FIXED_NOW)
    async with app.run_test(size=(100, 40)) as pilot:
        text = "\n".join(await attack_help_lines(pilot, None))
        assert f"In the {ExampleGallery.HELP_TITLE}" in text
        for binding in ExampleGallery.BINDINGS:
            if binding.description:
                assert binding.description in text
        assert "Cursor up" not in text  # a Textual widget's own keys stay out
        await pilot.press("escape")
        assert isinstance(app.screen, AttackScreen)
