"""The annotation page in headless Chromium (Playwright), against a server started here.

Screenshots of each step go to $SEGANY_SCREENSHOTS (default test-screenshots/).
"""

import numpy as np
import pytest

from segany.checkpoint import load_model
from segany.image_io import read_image
from segany.masks import rle_to_mask
from segany.predictor import SamPredictor
from segany.testing.server import click_image, draw_box, start_server, to_screen, wait_ready


def open_page(chromium, server, name: str, errors: list):
    """The page, signed in as a new annotator `name` through a ?token= link; page errors go to `errors`."""
    token = server.services.store.add_annotator(name)
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(f"{server.url}/?token={token}")
    wait_ready(page)
    return page


def saved_masks(server, name: str, image: str = "dog.jpg"):
    [who] = [a for a in server.services.store.annotators() if a["name"] == name]
    return server.services.store.masks(image, who["id"])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / max(1, (a | b).sum())


def test_click_mask_save_reload(chromium, server, screenshots):
    errors = []
    page = open_page(chromium, server, "clicker", errors)
    page.screenshot(path=screenshots / "1-opened.png")
    click_image(page, 400, 300)
    assert int(page.evaluate("document.body.dataset.maskPixels")) > 0
    assert page.locator("#candidates figure").count() == 3
    page.screenshot(path=screenshots / "2-clicked.png")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-status=saved]")
    [mask] = saved_masks(server, "clicker")
    assert mask["point_coords"] == [[pytest.approx(400, abs=1), pytest.approx(300, abs=1)]]
    assert mask["seconds"] is not None and mask["seconds"] >= 0

    # The mask the page computed (ONNX Runtime Web) is the one SamPredictor gives for that click.
    predictor = SamPredictor(load_model("default"))
    predictor.set_image(read_image(server.services.catalog.path("dog.jpg")))
    masks, scores, _ = predictor.predict(np.array(mask["point_coords"]), np.array([1]), multimask_output=True)
    assert iou(rle_to_mask(mask["segmentation"]), masks[scores.argmax()]) > 0.99

    page.reload()
    wait_ready(page)
    assert page.locator("#saved li").count() == 1
    page.screenshot(path=screenshots / "3-reloaded.png")
    assert errors == []


def test_brush_and_eraser_edit_the_saved_mask(chromium, server, screenshots):
    errors = []
    page = open_page(chromium, server, "painter", errors)
    click_image(page, 400, 300)
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-status=saved]")
    [before] = saved_masks(server, "painter")
    old = rle_to_mask(before["segmentation"])

    page.locator("#saved li button[data-act=edit]").click()
    page.keyboard.press("b")  # brush: a stroke along the top of the image
    page.mouse.move(*to_screen(page, 100, 30))
    page.mouse.down()
    page.mouse.move(*to_screen(page, 300, 30), steps=8)
    page.mouse.up()
    page.keyboard.press("e")  # eraser: one dab on the brushed stroke
    page.mouse.move(*to_screen(page, 200, 30))
    page.mouse.down()
    page.mouse.up()
    page.screenshot(path=screenshots / "4-brushed.png")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-status=saved]")
    [after] = saved_masks(server, "painter")
    new = rle_to_mask(after["segmentation"])
    assert after["id"] == before["id"] and after["version"] == 2
    assert new[30, 110] and new[30, 290] and not old[30, 110]  # brushed
    assert not new[30, 200]  # erased
    assert (new & ~old).sum() > 0 and new.sum() != old.sum()
    outside = np.ones_like(old)
    outside[:60] = False  # elsewhere the mask is what it was
    np.testing.assert_array_equal(new[outside], old[outside])
    assert errors == []


def test_prefill_button_adds_masks(chromium, server, screenshots):
    errors = []
    page = open_page(chromium, server, "prefiller", errors)
    page.keyboard.press("f")
    page.wait_for_function("document.getElementById('status').textContent.startsWith('Prefill added')",
                           timeout=120_000)
    added = saved_masks(server, "prefiller")
    assert len(added) > 0 and {m["source"] for m in added} == {"prefill"}
    assert page.locator("#saved li").count() == len(added)
    page.screenshot(path=screenshots / "5-prefilled.png")
    assert errors == []


def test_candidates_undo_redo_and_navigation(chromium, server, screenshots):
    errors = []
    page = open_page(chromium, server, "navigator", errors)
    click_image(page, 400, 300)
    chosen = page.evaluate("window.segany.candidates.scores.indexOf(Math.max(...window.segany.candidates.scores))")
    other = (chosen + 1) % 3
    page.keyboard.press(str(other + 1))
    assert page.locator("#candidates figure.chosen").count() == 1
    assert page.locator("#candidates figure").nth(other).get_attribute("class") == "chosen"
    click_image(page, 200, 100, button="right")  # a background point: one mask, no more ambiguity
    assert page.locator("#candidates figure").count() == 1
    assert page.evaluate("window.segany.edit.points.map(p => p.label)") == [1, 0]
    page.keyboard.press("Control+z")
    page.wait_for_function("!window.segany.decoding && window.segany.candidates.count === 3")
    assert page.evaluate("window.segany.edit.points.length") == 1
    page.keyboard.press("Control+Shift+z")
    page.wait_for_function("!window.segany.decoding && window.segany.candidates.count === 1")
    page.keyboard.press("n")  # an unsaved mask holds the first request back
    assert page.evaluate("document.body.dataset.status") == "unsaved"
    assert page.evaluate("document.getElementById('image-name').textContent") == "dog.jpg"
    page.keyboard.press("Escape")
    assert page.evaluate("document.body.dataset.maskPixels") == "0"

    page.keyboard.press("n")
    page.wait_for_function("document.getElementById('image-name').textContent === 'more/groceries.jpg'")
    wait_ready(page)
    page.screenshot(path=screenshots / "6-next-image.png")
    page.keyboard.press("p")
    page.wait_for_function("document.getElementById('image-name').textContent === 'dog.jpg'")
    assert errors == []


def test_box_zoom_and_delete(chromium, server, screenshots):
    errors = []
    page = open_page(chromium, server, "boxer", errors)
    scale = page.evaluate("window.segany.zoom.scale")
    page.mouse.move(*to_screen(page, 400, 300))
    page.mouse.wheel(0, -400)  # zoom in around the pointer: that image pixel stays under it
    page.wait_for_function(f"window.segany.zoom.scale > {scale * 1.5}")
    x, y = to_screen(page, 400, 300)
    assert page.evaluate("""([x, y]) => {
        const rect = document.getElementById('view').getBoundingClientRect(), z = window.segany.zoom;
        return [(x - rect.left - z.x) / z.scale, (y - rect.top - z.y) / z.scale];
    }""", [x, y]) == [pytest.approx(400, abs=0.5), pytest.approx(300, abs=0.5)]
    page.keyboard.press("0")  # fit the image again

    draw_box(page, 250, 150, 550, 450)
    assert page.evaluate("window.segany.edit.box") == [pytest.approx(v, abs=1) for v in (250, 150, 550, 450)]
    assert page.locator("#candidates figure").count() == 1  # a box: the single-mask output
    assert int(page.evaluate("document.body.dataset.maskPixels")) > 0
    page.screenshot(path=screenshots / "7-box.png")
    page.keyboard.press("Enter")
    page.wait_for_selector("body[data-status=saved]")
    assert len(saved_masks(server, "boxer")) == 1
    page.locator("#saved li button[data-act=delete]").click()
    page.wait_for_function("document.querySelectorAll('#saved li').length === 0")
    assert saved_masks(server, "boxer") == []
    assert errors == []


@pytest.mark.parametrize("family", ["sam_hq_tiny", "sam2"])
def test_page_runs_the_decoders_with_image_features(chromium, image_folder, family_checkpoint, tmp_path,
                                                    screenshots, family):
    """SAM-HQ (hq_features) and SAM 2.1 (two high-resolution maps; its prompt order and square
    resize) in the page: a click and a box, each saved mask the one SamPredictor gives."""
    checkpoint = family_checkpoint(family)
    running = start_server(image_folder, f"sqlite:///{tmp_path / 'annotations.db'}", tmp_path / "cache",
                           model=str(checkpoint))
    try:
        errors = []
        page = open_page(chromium, running, family, errors)
        click_image(page, 400, 300)
        assert page.locator("#candidates figure").count() == 3
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-status=saved]")
        draw_box(page, 250, 150, 550, 450)
        page.screenshot(path=screenshots / f"8-{family}-box.png")
        box = page.evaluate("window.segany.edit.box")
        page.keyboard.press("Enter")
        page.wait_for_function("document.querySelectorAll('#saved li').length === 2")
        clicked, boxed = sorted(saved_masks(running, family), key=lambda m: m["id"])
        assert errors == []
    finally:
        running.stop()

    predictor = SamPredictor(load_model(str(checkpoint)))
    predictor.set_image(read_image(image_folder / "dog.jpg"))
    masks, scores, _ = predictor.predict(np.array(clicked["point_coords"]), np.array([1]), multimask_output=True)
    assert iou(rle_to_mask(clicked["segmentation"]), masks[scores.argmax()]) > 0.99
    [mask], _, _ = predictor.predict(box=np.array(box), multimask_output=False)
    assert iou(rle_to_mask(boxed["segmentation"]), mask) > 0.99
