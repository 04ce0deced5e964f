"""The model browser (/ui) in a real browser (Debian's chromium, through Selenium) against real servers.

Every test waits on DOM conditions (explicit, bounded waits, never sleeps) and, at its end, fails on any
request the page made for a host other than 127.0.0.1 and on any script error or CSP violation. The
screenshots of the home and digits pages at 375 and 1280 px land in $RECAP_UI_SCREENSHOTS (default
reports/ui/); `make ui-screenshots` copies two of them into docs/.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.helpers.browser import Browser, browser_missing
from tests.helpers.servers import MODELS, REPO, ZOO, RunningServer, start_server
from tests.helpers.zoo import manifest

pytestmark = pytest.mark.e2e
EXAMPLES = REPO / "service" / "static" / "ui" / "examples.json"
SCREENSHOTS = Path(os.environ.get("RECAP_UI_SCREENSHOTS", REPO / "reports" / "ui"))
DIGIT_MODELS = ("digits-mlp", "digits-rnn", "digits-lstm", "digits-gru", "digits-transformer")
INFERENCE_KEY = "ui-inference-key-0123456789abcdef"
WIDTHS = (1280, 375)
CURVE_LOADED = (
    "const i = document.getElementById('learning-curve'); return i && i.complete && i.naturalWidth > 0"
)


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    missing = browser_missing()
    if missing and os.environ.get("RECAP_UI_REQUIRE_BROWSER"):  # make ui-screenshots: no silent skip
        pytest.fail(missing)
    if missing:
        pytest.skip(missing)
    running = Browser()
    try:
        yield running
    finally:
        running.quit()


@pytest.fixture
def browser(chromium: Browser) -> Iterator[Browser]:
    """The module's browser at 1280 px with empty logs; at the end, nothing may have left 127.0.0.1."""
    chromium.set_width(1280)
    chromium.forget_logs()
    yield chromium
    chromium.page("about:blank")  # first: no page polls the server between tests, or after the check
    outside = chromium.outside_requests()
    errors = chromium.script_errors()
    assert outside == [], f"the page reached beyond 127.0.0.1: {outside}"
    assert errors == [], f"script errors or CSP violations in the page: {errors}"


@pytest.fixture
def zoo(zoo_server: RunningServer) -> str:
    return zoo_server.url


def model_names() -> list[str]:
    """The models the zoo server serves: the committed zoo's 12, or RECAP_TEST_MODEL_REPOSITORY's."""
    names = sorted(p.parents[1].name for p in MODELS.glob("*/*/model.json"))
    assert MODELS != ZOO or len(set(names)) == 12, names
    return sorted(set(names))


def examples() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(EXAMPLES.read_text())
    return document


def js_number(value: float) -> str:
    """What the page prints for a metric: 4 significant digits, as JavaScript's String() writes it."""
    rounded = float(f"{value:.4g}")
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def bars(browser: Browser, selector: str) -> list[dict[str, Any]]:
    """The bars of every chart under `selector`: [{model, top, bars: [(label, value)]}]."""
    script = """
      return [...document.querySelectorAll(arguments[0])].map((figure) => ({
        model: figure.dataset.model || "", top: figure.dataset.top,
        bars: [...figure.querySelectorAll("ol.bars li")]
          .map((li) => [li.dataset.label, Number(li.dataset.value)]),
      }));"""
    charts: list[dict[str, Any]] = browser.js(script, selector)
    return charts


def text_of(browser: Browser, selector: str) -> str:
    found: str = browser.js(
        "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''", selector
    )
    return found


def draw_a_one(browser: Browser) -> None:
    """A vertical stroke down the pad's fifth column, top to bottom, with the mouse."""
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    pad = browser.wait(lambda d: d.find_element(By.CSS_SELECTOR, "canvas.pad"), "no drawing pad")
    size = pad.size["width"]
    cell = size / 8
    x = cell * 4.5 - size / 2  # Selenium's offsets are from the element's centre
    actions = ActionChains(browser.driver, duration=10)
    actions.move_to_element_with_offset(pad, int(x), int(cell * 0.5 - size / 2)).click_and_hold()
    for _ in range(7):
        actions.move_by_offset(0, int(cell))
    actions.release().perform()


def charts_from_all(browser: Browser, models: tuple[str, ...]) -> list[dict[str, Any]]:
    def answered(_: Any) -> list[dict[str, Any]] | None:
        charts = bars(browser, "#digit-results figure")
        return charts if {c["model"] for c in charts if len(c["bars"]) == 10} >= set(models) else None

    return browser.wait(answered, f"not every digit model answered: {text_of(browser, '#digit-results')}")


# -- no browser needed -----------------------------------------------------------------------------------


def test_examples_are_real_rows_of_the_datasets() -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    for key, example in examples().items():
        if key == "about":
            continue
        kwargs = {"scaled": False} if example["dataset"] == "load_diabetes" else {}
        bunch = getattr(datasets, example["dataset"])(**kwargs)
        assert np.array_equal(bunch.data[example["row"]], example["features"]), key
        target = bunch.target[example["row"]]
        if key == "digits":
            assert example["target"] == str(target)
        elif "target_range" in example:  # regression
            assert example["target"] == float(target)
        else:
            assert example["target"] == str(bunch.target_names[target]), key
        if "target_range" in example:
            assert example["target_range"] == [float(bunch.target.min()), float(bunch.target.max())]


def test_the_page_is_open_and_its_data_routes_are_read_only(zoo: str) -> None:
    with httpx.Client(base_url=zoo, timeout=30) as http:
        for path in ("/ui", "/ui/", "/ui/models/iris-mlp", "/ui/models/iris-mlp/versions/1"):
            page = http.get(path)
            assert page.status_code == 200 and "text/html" in page.headers["content-type"], path
            assert "connect-src 'self'" in page.headers["content-security-policy"]
        curve = http.get("/v1/models/iris-mlp/versions/1/learning_curve.png")
        assert curve.headers["content-type"] == "image/png"
        assert curve.content == (MODELS / "iris-mlp" / "1" / "learning_curve.png").read_bytes()
        assert http.get("/v1/models/iris-mlp/learning_curve.png").content == curve.content
        for path in ("/v1/models/nope/learning_curve.png", "/v1/models/..%2F..%2Fetc/learning_curve.png"):
            missing = http.get(path)
            assert missing.status_code == 404 and "error" in missing.json(), path
        assert http.post("/v1/models/iris-mlp/learning_curve.png").status_code == 405
        listing = http.get("/ui/api/models").json()["models"]
        assert sorted({row["name"] for row in listing}) == model_names()
        card = http.get("/ui/api/models/dates-seq2seq").json()
        assert card["trimmed"]["split.test_examples"] == 1000
        assert len(card["model_json"]["split"]["test_examples"]) < 1000
        assert card["model_json"]["tokenizer"] == manifest("dates-seq2seq")["tokenizer"]  # needed whole


# -- the pages ---------------------------------------------------------------------------------------------


def test_home_lists_every_model_with_its_metrics(browser: Browser, zoo: str) -> None:
    names = model_names()
    browser.page(f"{zoo}/ui")
    rows = browser.wait(
        lambda _: (
            browser.js(
                "return [...document.querySelectorAll('table.models tbody tr')]"
                ".map((tr) => [tr.dataset.model, tr.innerText])"
            )
            or None
        ),
        "the model table never appeared",
    )
    assert sorted({model for model, _ in rows}) == names
    for model, text in rows:
        document = manifest(model)
        test, baseline = document["metrics"]["test"], document["metrics"]["baseline"]
        metric = next(k for k, v in test.items() if isinstance(v, float | int) and k in baseline)
        assert f"{metric.replace('_', ' ')} {js_number(test[metric])}" in text, model
        assert f"baseline {js_number(baseline[metric])}" in text, model
        assert document["recap_topic"] in text and "ready" in text and "CPU" in text, model


def test_the_iris_form_gives_the_probabilities_of_a_direct_v2_call(browser: Browser, zoo: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.page(f"{zoo}/ui/models/iris-mlp")
    button = browser.wait(
        lambda d: d.find_element(By.CSS_SELECTOR, "#tabular-form button[type=submit]"), "no form"
    )
    button.click()
    charts = browser.wait(lambda _: bars(browser, "#tabular-result figure") or None, "no probabilities")
    shown = charts[0]["bars"]
    assert [label for label, _ in shown] == manifest("iris-mlp")["labels"]
    assert math.isclose(sum(value for _, value in shown), 1.0, abs_tol=1e-5)
    row = examples()["iris-mlp"]["features"]
    direct = httpx.post(
        f"{zoo}/v2/models/iris-mlp/infer",
        json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": row}],
            "outputs": [{"name": "probabilities"}],
        },
        timeout=30,
    ).json()["outputs"][0]["data"]
    assert [value for _, value in shown] == direct  # the same floats, not merely close


def test_drawing_a_one_gets_an_answer_from_all_five_digit_models(browser: Browser, zoo: str) -> None:
    browser.page(f"{zoo}/ui/models/digits-mlp")
    draw_a_one(browser)
    charts = charts_from_all(browser, DIGIT_MODELS)
    for chart in charts:
        assert math.isclose(sum(v for _, v in chart["bars"]), 1.0, abs_tol=1e-4), chart["model"]
        assert chart["top"] == "1", f"{chart['model']} read the stroke as {chart['top']}"


def test_the_pad_draws_from_the_keyboard_too(browser: Browser, zoo: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    browser.page(f"{zoo}/ui/models/digits-rnn")
    pad = browser.wait(lambda d: d.find_element(By.CSS_SELECTOR, "canvas.pad"), "no drawing pad")
    pad.send_keys(
        Keys.ARROW_RIGHT, Keys.ARROW_UP, Keys.ARROW_UP, Keys.ARROW_UP, Keys.SPACE
    )  # top of column 5
    stroke = ActionChains(browser.driver).key_down(Keys.SHIFT)
    for _ in range(7):
        stroke.send_keys(Keys.ARROW_DOWN)  # Shift+arrow draws
    stroke.key_up(Keys.SHIFT).send_keys(Keys.ENTER).perform()
    assert browser.js("return document.activeElement.matches('canvas.pad')")
    charts = charts_from_all(browser, DIGIT_MODELS)
    assert {c["top"] for c in charts} == {"1"}


def test_the_gan_sheet_loads(browser: Browser, zoo: str) -> None:
    browser.page(f"{zoo}/ui/models/digits-gan-generator")
    loaded = browser.wait(
        lambda _: browser.js(
            "const i = document.querySelector('#gan-sheet img');"
            "return i && i.complete && i.naturalWidth > 0 ? [i.src, i.naturalWidth, i.alt] : null"
        ),
        "the GAN's sample sheet never loaded",
    )
    src, width, alt = loaded
    assert src.startswith("blob:") and width > 8 and "seed 7" in alt


def test_a_dates_query_answers_an_iso_date(browser: Browser, zoo: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.page(f"{zoo}/ui/models/dates-seq2seq")
    field = browser.wait(
        lambda d: d.find_element(By.CSS_SELECTOR, "form.tryit input[type=text]"), "no text box"
    )
    field.clear()
    field.send_keys("March 3, 2021\n")  # Enter submits
    browser.wait(
        lambda _: re.fullmatch(r"\d{4}-\d{2}-\d{2}", text_of(browser, "#date-answer")), "no ISO date"
    )
    assert text_of(browser, "#date-answer") == "2021-03-03"


def test_streamed_text_appears_progressively(browser: Browser, zoo: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    prompt = "The "
    parameters = {"max_tokens": 20, "temperature": 0, "top_k": 0, "top_p": 1}
    expected = httpx.post(
        f"{zoo}/v2/models/pydoc-gpt/generate",
        json={"text_input": prompt, "parameters": parameters},
        timeout=60,
    ).json()
    assert expected["tokens"] == 20 and expected["finish_reason"] == "length"
    browser.page(f"{zoo}/ui/models/pydoc-gpt")
    browser.wait(lambda d: d.find_element(By.ID, "gpt-output"), "no GPT panel")
    for label, value in (("Max tokens", 20), ("Temperature", 0), ("Top-k", 0), ("Top-p", 1)):
        browser.js(
            "const l = [...document.querySelectorAll('label')].find((x) => x.textContent === arguments[0]);"
            "document.getElementById(l.htmlFor).value = arguments[1];",
            label,
            str(value),
        )
    # Each observer callback is one render the visitor could see: count those that added text.
    browser.js("""
      const output = document.getElementById("gpt-output");
      window.seenLengths = [];
      new MutationObserver(() => window.seenLengths.push(output.textContent.length))
        .observe(output, {childList: true, characterData: true, subtree: true});
      output.closest("form").requestSubmit();""")
    browser.wait(lambda _: text_of(browser, "#gpt-status").startswith("Done"), "the stream never finished")
    lengths = browser.js("return window.seenLengths")
    growing = [b for a, b in zip([0, *lengths], lengths, strict=False) if b > a]
    assert len(growing) >= 5, f"only {len(growing)} DOM updates with new text for 20 tokens: {lengths}"
    assert text_of(browser, "#gpt-output") == expected["text_output"]
    charts = browser.wait(lambda _: bars(browser, "#gpt-topk figure") or None, "no next-character odds")
    assert len(charts[0]["bars"]) == 10 and sum(v for _, v in charts[0]["bars"]) <= 1 + 1e-5


def test_the_status_strip_shows_requests_per_second_and_p99(browser: Browser, zoo: str) -> None:
    stop = threading.Event()
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}

    def traffic() -> None:
        with httpx.Client(base_url=zoo, timeout=30) as http:
            while not stop.is_set():
                http.post("/v2/models/iris-mlp/infer", json=body)
                stop.wait(0.01)

    worker = threading.Thread(target=traffic)
    worker.start()
    try:
        browser.page(f"{zoo}/ui")
        rate, p99 = browser.wait(
            lambda _: browser.js(
                "const li = document.querySelector('#status li[data-model=\"iris-mlp\"]');"
                "return li && li.dataset.p99 ? [Number(li.dataset.rate), Number(li.dataset.p99)] : null"
            ),
            "the status strip never showed iris-mlp's traffic",
        )
    finally:
        stop.set()
        worker.join()
    assert rate > 0 and 0 < p99 < 2.5
    assert re.search(r"iris-mlp [\d.]+ req/s · p99 [\d.]+ ms", text_of(browser, "#status"))


def test_api_errors_are_shown_as_the_api_says_them(browser: Browser, zoo: str) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    browser.page(f"{zoo}/ui/models/no-such-model")
    browser.wait(
        lambda _: "unknown model 'no-such-model'" in text_of(browser, "main .error"), "no 404 message"
    )
    browser.page(f"{zoo}/ui/models/iris-mlp")
    field = browser.wait(lambda d: d.find_element(By.CSS_SELECTOR, "#tabular-form input"), "no form")
    field.clear()
    field.send_keys("1e39")  # finite for JavaScript, out of FP32's range for the server
    browser.driver.find_element(By.CSS_SELECTOR, "#tabular-form button[type=submit]").click()
    message = browser.wait(lambda _: text_of(browser, "#tabular-result .error"), "no error shown")
    direct = httpx.post(
        f"{zoo}/v2/models/iris-mlp/infer",
        json={
            "inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1e39, 2.7, 5.1, 1.6]}]
        },
        timeout=30,
    )
    assert direct.status_code == 400 and message == direct.json()["error"]


@pytest.mark.parametrize(
    "model", ["iris-mlp", "digits-mlp", "digits-gan-generator", "dates-seq2seq", "pydoc-gpt"]
)
def test_every_control_has_a_label_and_takes_the_keyboard(browser: Browser, zoo: str, model: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains  # noqa: PLC0415
    from selenium.webdriver.common.keys import Keys  # noqa: PLC0415

    browser.page(f"{zoo}/ui/models/{model}")
    browser.wait(
        lambda _: browser.js("return document.querySelector('#tryit form, #tryit canvas') !== null"),
        "no panel",
    )
    unnamed = browser.js("""
      return [...document.querySelectorAll("input, select, textarea, button, canvas, a")]
        .filter((e) => e.offsetParent !== null || e.tagName === "CANVAS")
        .filter((e) => !((e.labels && e.labels.length) || e.getAttribute("aria-label")
                         || e.textContent.trim()))
        .map((e) => e.outerHTML.slice(0, 120));""")
    assert unnamed == []
    # Tab alone reaches the try-it panel, and the focused control is outlined.
    for _ in range(60):
        ActionChains(browser.driver).send_keys(Keys.TAB).perform()
        if browser.js("return document.activeElement.closest('#tryit') !== null"):
            break
    else:
        pytest.fail("Tab never reached the try-it panel")
    assert browser.js("return getComputedStyle(document.activeElement).outlineStyle") != "none"


def test_with_api_keys_the_page_asks_once_and_keeps_the_key_for_the_tab(
    browser: Browser, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    repository = tmp_path / "models"
    shutil.copytree(MODELS / "iris-mlp", repository / "iris-mlp")
    keys = tmp_path / "api-keys"
    keys.write_text(f"inference {INFERENCE_KEY}\n")
    server = start_server(repository, tmp_path / "server.log", env={"RECAP_API_KEYS_FILE": str(keys)})
    try:
        assert httpx.get(f"{server.url}/ui").status_code == 200  # the page holds no data
        assert httpx.get(f"{server.url}/ui/api/models").status_code == 401
        browser.page(f"{server.url}/ui")
        dialog = browser.wait(lambda d: d.find_element(By.ID, "key-dialog"), "no key dialog")
        browser.wait(lambda _: dialog.get_attribute("open") is not None, "the page never asked for a key")
        assert "needs an API key" in dialog.text
        key_field = browser.driver.find_element(By.ID, "key-input")
        key_field.send_keys("wrong-key\n")
        browser.wait(lambda _: "not accepted" in dialog.text, "a wrong key was not refused")
        key_field.send_keys(INFERENCE_KEY + "\n")
        browser.wait(lambda _: "iris-mlp" in text_of(browser, "table.models"), "no models with the key")
        assert browser.js("return sessionStorage.getItem('recap-serve.api-key')") == INFERENCE_KEY
        # The strip's routes need the metrics scope, which this key lacks: it says so.
        browser.wait(lambda _: "metrics scope" in text_of(browser, "#status"), "no scope message")
        browser.page(f"{server.url}/ui/models/iris-mlp")  # same tab: no second question
        browser.wait(
            lambda _: browser.js(CURVE_LOADED),
            "the learning curve did not load with the key",
        )
        assert browser.js("return !document.getElementById('key-dialog').open")
        browser.js("sessionStorage.clear()")
    finally:
        browser.page("about:blank")
        server.stop()


def test_the_guard_sees_a_request_that_leaves(chromium: Browser) -> None:
    """The check the other tests end with finds a host name and an IP address (192.0.2.1: RFC 5737)."""
    chromium.forget_logs()
    chromium.page("data:text/html,<img src='http://example.com/x.png'><img src='http://192.0.2.1/y.png'>")

    def both_seen(_: Any) -> list[str] | None:
        outside = chromium.outside_requests()
        return outside if "192.0.2.1" in str(outside) and "example.com" in str(outside) else None

    chromium.wait(both_seen, "the guard missed a request that left 127.0.0.1")
    chromium.page("about:blank")
    chromium.forget_logs()


def test_screenshots_at_both_widths(browser: Browser, zoo: str) -> None:
    """Home and digits pages at 1280 and 375 px: nothing wider than the screen; saved for docs/."""
    rows = model_names()
    for width in WIDTHS:
        browser.set_width(width)
        browser.page(f"{zoo}/ui")
        browser.wait(
            lambda _: (
                browser.js("return document.querySelectorAll('table.models tbody tr').length") >= len(rows)
            ),
            "no model table",
        )
        browser.wait(lambda _: "Last" in text_of(browser, "#status"), "the status strip never refreshed")
        assert browser.js("return document.documentElement.scrollWidth") <= width
        browser.screenshot(SCREENSHOTS / f"home-{width}.png")
        browser.page(f"{zoo}/ui/models/digits-mlp")
        draw_a_one(browser)
        charts_from_all(browser, DIGIT_MODELS)
        browser.wait(
            lambda _: browser.js(CURVE_LOADED),
            "no learning curve",
        )
        browser.wait(lambda _: "Last" in text_of(browser, "#status"), "the status strip never refreshed")
        assert browser.js("return document.documentElement.scrollWidth") <= width
        browser.screenshot(SCREENSHOTS / f"digits-{width}.png")
    for name in ("home-1280", "home-375", "digits-1280", "digits-375"):
        assert (SCREENSHOTS / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
