"""The gallery's selection and the zoomed view of one example (clean, adversarial, amplified perturbation,
labels and norms), the half-block fallback where textual-image or graphics are missing, and snapshots."""

from __future__ import annotations

import sys

import pytest
from textual.app import App, ComposeResult
from textual.widgets import Static

from workbench.tui.model.examples_view import Example, load_examples, zoom_facts
from workbench.tui.screens.attack import AttackScreen
from workbench.tui.screens.example_zoom import ExampleZoom
from workbench.tui.widgets import image_grid
from workbench.tui.widgets.example_gallery import ExampleGallery
from workbench.tui.widgets.image_grid import GraphicsStrip, HalfBlockStrip, fit, image_strip, probe_graphics

from .fixed_runs import DATA, FINISHED
from .test_attack_panel import app_for, as_text, open_panel
from .waiting import wait_until, wait_until_settled


async def _gallery(pilot, fixed_runs, catalog: bool = False) -> ExampleGallery:
    """The attack panel on the fixed run's evaluation, its gallery tab in front."""
    screen = await open_panel(pilot, fixed_runs / FINISHED, catalog=catalog)
    await wait_until(pilot, lambda: screen.examples_ready and screen.query_one(ExampleGallery).examples,
                     what="the examples")
    await pilot.press("3")
    gallery = screen.query_one(ExampleGallery)
    await wait_until(pilot, lambda: pilot.app.focused is gallery, what="the gallery's focus")
    return gallery


def _norms(e: Example) -> tuple[float, float]:
    """L-inf and L2 of the change, computed here from the pixels (gray images: one float a pixel)."""
    diffs = [a - c for ra, rc in zip(e.adversarial, e.clean) for a, c in zip(ra, rc)]
    return max(abs(d) for d in diffs), sum(d * d for d in diffs) ** 0.5


async def test_zoom_opens_on_the_selected_example_with_its_labels_and_norms(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        gallery = await _gallery(pilot, fixed_runs)
        assert gallery.cursor == 0 and "▶ #3 fooled" in as_text(gallery.render())  # the fooled one comes first
        await pilot.press("down", "down")
        chosen = gallery.selected
        assert gallery.cursor == 2 and chosen is gallery.shown[2]
        assert f"▶ {chosen.caption()}" in as_text(gallery.render())
        await pilot.press("z")
        await wait_until(pilot, lambda: isinstance(app.screen, ExampleZoom), what="the zoom")
        zoom = app.screen
        assert zoom.example is chosen
        box = zoom.query_one("#zoom-box")
        assert box.border_title == f"FGSM eps 0.05 · #{chosen.sample} robust {chosen.true} → {chosen.adv_pred}"
        assert box.border_subtitle.startswith("3/4")
        facts = as_text(zoom.query_one("#zoom-facts", Static).content)
        linf, l2 = _norms(chosen)
        for text in (f"label         {chosen.true}",
                     f"clean         {chosen.clean_pred} ({chosen.clean_conf:.2f})",
                     f"adversarial   {chosen.adv_pred} ({chosen.adv_conf:.2f}) · robust",
                     "eps           0.05 · FGSM",
                     f"L∞ {linf:.4f} = {linf * 255:.3g}/255 · L2 {l2:.4f}",
                     f"×{1 / (2 * linf):.3g} to the full range"):
            assert text in facts, facts
        # Larger than the gallery's thumbnails (scale 1 at 80 columns): three 8x8 digits at scale 3 fill 76 cells.
        strip = zoom.query_one("#zoom-images", HalfBlockStrip)
        assert [len(img[0]) for img in strip.fitted()] == [24, 24, 24]
        assert strip.titles[2] == f"perturbation ×{1 / (2 * linf):.3g}"
        await pilot.press("right")  # the next example of the gallery's list
        assert zoom.example is gallery.shown[3] and box.border_subtitle.startswith("4/4")
        await pilot.press("escape")
        await wait_until(pilot, lambda: isinstance(app.screen, AttackScreen), what="the attack panel again")
        assert app.focused is gallery and gallery.cursor == 2


async def test_enter_and_a_double_click_open_the_zoom_and_the_filter_limits_its_list(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(120, 36)) as pilot:
        gallery = await _gallery(pilot, fixed_runs)
        await pilot.press("f")  # fooled only: one example in this group
        assert [e.fooled for e in gallery.shown] == [True]
        await pilot.press("enter")
        await wait_until(pilot, lambda: isinstance(app.screen, ExampleZoom), what="the zoom")
        assert app.screen.examples == gallery.shown and app.screen.example.fooled
        assert "· fooled" in as_text(app.screen.query_one("#zoom-facts", Static).content)
        await pilot.press("z")  # z closes it too
        await wait_until(pilot, lambda: isinstance(app.screen, AttackScreen), what="the attack panel again")
        await pilot.press("f")  # robust only: a double click on the second opens it
        top, _ = gallery._spans()[1]
        await pilot.click(gallery, offset=(3, top + 2), times=2)
        await wait_until(pilot, lambda: isinstance(app.screen, ExampleZoom), what="the zoom")
        assert gallery.cursor == 1 and app.screen.example is gallery.shown[1] and not app.screen.example.fooled


async def test_the_selection_scrolls_into_view_and_shift_tab_leaves_the_gallery(fixed_runs):
    app = app_for(fixed_runs)
    async with app.run_test(size=(80, 24)) as pilot:
        gallery = await _gallery(pilot, fixed_runs)
        scroll = gallery.parent
        await pilot.press("down", "down", "down", "down")  # past the last: stays on it
        await pilot.pause()
        assert gallery.cursor == 3
        top, height = gallery._spans()[3]
        assert 0 < scroll.scroll_y <= top and top + height <= scroll.scroll_y + scroll.scrollable_content_region.height
        await pilot.press("shift+tab")
        await pilot.pause()
        assert app.focused is not gallery and app.focused is not scroll


# -- real graphics or half blocks ---------------------------------------------------------------

@pytest.fixture
def no_graphics():
    yield
    image_grid._graphics.clear()  # what a test found or faked must not reach the next one


def test_without_textual_image_the_images_are_half_blocks(monkeypatch, no_graphics):
    for name in [m for m in sys.modules if m == "textual_image" or m.startswith("textual_image.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "textual_image", None)  # `import textual_image` now fails
    assert probe_graphics({}) is None
    assert isinstance(image_strip(["clean"]), HalfBlockStrip)


def test_graphics_off_and_no_terminal_mean_half_blocks(no_graphics):
    assert probe_graphics({"WORKBENCH_GRAPHICS": "off"}) is None
    # Under pytest stdout is no terminal: textual-image (when installed) would draw text, so half blocks.
    assert probe_graphics({}) is None and isinstance(image_strip(["clean"]), HalfBlockStrip)


def test_fit_enlarges_by_whole_pixels_and_shrinks_what_does_not_fit():
    digit = [[y * 8 + x for x in range(8)] for y in range(8)]
    assert len(fit(digit, 24, 30)) == 24 and fit(digit, 24, 30)[0][:4] == [0, 0, 0, 1]
    assert len(fit(digit, 23, 100)[0]) == 16  # 2x, not a ragged 2.875x
    small = fit(digit, 4, 4)
    assert small == [[0, 2, 4, 6], [16, 18, 20, 22], [32, 34, 36, 38], [48, 50, 52, 54]]


class _ZoomApp(App):
    def __init__(self, examples: list[Example]) -> None:
        super().__init__()
        self.examples = examples

    def compose(self) -> ComposeResult:
        yield Static("under")

    def on_mount(self) -> None:
        self.push_screen(ExampleZoom(self.examples, 0, "FGSM eps 0.05"))


async def test_where_the_terminal_draws_graphics_the_zoom_uses_textual_image(no_graphics):
    widget = pytest.importorskip("textual_image.widget")
    image_grid._graphics.update(protocol="tgp", widget=widget.TGPImage)  # as probe_graphics finds it in Kitty
    app = _ZoomApp(load_examples(DATA / "examples.pt"))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        strip = app.screen.query_one("#zoom-images", GraphicsStrip)
        images = list(strip.query(widget.TGPImage))
        assert len(images) == 3 and all(i.image is not None and i.image.size[0] >= 512 for i in images)
        assert all(0 < i.size.width <= 24 and i.size.height > 0 for i in images)  # fitted in its third, aspect kept


# -- snapshots ----------------------------------------------------------------------------------

def _snapshot_run(zoom: bool):
    async def run_before(pilot):
        await _gallery(pilot, pilot.app.runs_dir, catalog=True)  # the attack list loaded: a stable form
        await pilot.press("down")
        if zoom:
            await pilot.press("z")
            await wait_until(pilot, lambda: isinstance(pilot.app.screen, ExampleZoom), what="the zoom")
        await wait_until_settled(pilot)
    return run_before


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_gallery_snapshot(fixed_runs, snap_compare, size):
    assert snap_compare(app_for(fixed_runs), terminal_size=size, run_before=_snapshot_run(zoom=False))


@pytest.mark.parametrize("size", [(80, 24), (120, 36)], ids=["80x24", "120x36"])
def test_zoom_snapshot(fixed_runs, snap_compare, size):
    assert snap_compare(app_for(fixed_runs), terminal_size=size, run_before=_snapshot_run(zoom=True))


def test_zoom_facts_name_the_norm_and_say_when_nothing_bounds_the_attack():
    gray = [[0.5, 0.5], [0.5, 0.5]]
    base = dict(protocol="custom", sample=0, true=1, clean_pred=1, clean_conf=0.9, adv_pred=2, adv_conf=0.8,
                clean=gray, adversarial=[[0.5, 0.5], [0.5, 0.5 + 8 / 255]])
    linf = dict((name, value) for name, value, _ in
                zoom_facts(Example(attack="PGD", value=8 / 255, norm="linf", **base)))
    assert linf["eps"] == "0.0313725 (L∞) = 8/255 · PGD (custom)" and linf["adversarial"] == "2 (0.80) · fooled"
    assert linf["perturbation"].startswith("L∞ 0.0314 = 8/255 · L2 0.0314")
    unbounded = dict((name, value) for name, value, _ in
                     zoom_facts(Example(attack="C&W", value=None, norm="l2", **base | {"adversarial": gray})))
    assert unbounded["eps"].startswith("unbounded") and unbounded["shown"] == "no change at all"
