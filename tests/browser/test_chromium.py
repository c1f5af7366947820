"""A real headless Chromium (Debian's ``chromium`` and ``chromedriver``, never a downloaded
browser) loads a page served by an ipcwire listener, talks WebSocket to another ipcwire
listener, and reads Server-Sent Events, including resuming after the server dropped it.

Waiting is on conditions in the page (``WebDriverWait`` polling ``window.log``), never sleeps.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

import ipcwire
from ipcwire.errors import FrameTooLarge
from ipcwire.sse.blocking import SseServerChannel

PAGE = (Path(__file__).parent / "page.html").read_text()
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT = 30.0


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: ./dev test installs them")
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="iw-chromium-")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests may run as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--user-data-dir={profile}",
    ):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    try:
        yield driver
    finally:
        driver.quit()


def until(driver: webdriver.Chrome, script: str, check: Callable[[Any], bool] = bool) -> Any:
    """Poll ``script`` in the page until ``check`` holds for its value; return the value."""
    box: list[Any] = []

    def ready(d: Any) -> bool:
        box[:] = [d.execute_script(script)]
        return check(box[0])

    WebDriverWait(driver, WAIT, poll_frequency=0.02).until(ready)
    return box[0]


def origin_of(url: str) -> str:
    """The http:// origin of a listener URL (its scheme, host and port)."""
    rest = url.split("://", 1)[1].split("/", 1)[0]
    return f"http://{rest}"


def test_websocket_from_a_browser_page(browser: webdriver.Chrome) -> None:
    with (
        ipcwire.listen("sse+http://127.0.0.1:0/events", pages={"/": PAGE}) as site,
        ipcwire.listen("ws://127.0.0.1:0/ws", codec="json", origins=[origin_of(site.url)]) as echo,
        ipcwire.listen(
            "ws://127.0.0.1:0/private",
            codec="json",
            token="browser-token",
            max_frame=1024,
            origins=[origin_of(site.url)],
            pages={"/": PAGE},
        ) as private,
    ):
        browser.get(origin_of(site.url) + "/")
        assert browser.title == "ipcwire browser test"

        # Echo: the page's message arrives decoded, the reply is a text frame JSON.parse reads.
        browser.execute_script(
            "openWs('echo', arguments[0], [JSON.stringify({hello: 'browser'})])", echo.url
        )
        with echo.accept(timeout=WAIT) as ch:
            assert ch.recv(timeout=WAIT) == {"hello": "browser"}
            assert ch.peer is not None
            ch.send({"echo": "from python", "n": [1, 2.5, None]})
            got = until(browser, "return log.ws")
            assert got == [{"name": "echo", "data": {"echo": "from python", "n": [1, 2.5, None]}}]

            # A wrong token as the first message: closed with 1008, the reason says why.
            browser.execute_script(
                "openWs('bad', arguments[0], [JSON.stringify({token: 'nope'})])", private.url
            )
            closed = until(browser, "return log.wsClose")
            assert closed[0]["name"] == "bad"
            assert closed[0]["code"] == 1008
            assert "wrong token" in closed[0]["reason"]

            # The right token, then a message, then one over max_frame.
            browser.execute_script(
                "openWs('good', arguments[0], [JSON.stringify({token: 'browser-token'}), "
                "JSON.stringify('authorized')])",
                private.url,
            )
            with private.accept(timeout=WAIT) as auth:
                assert auth.recv(timeout=WAIT) == "authorized"
                browser.execute_script("sockets.good.send(JSON.stringify('x'.repeat(2000)))")
                with pytest.raises(FrameTooLarge):
                    auth.recv(timeout=WAIT)
            closed = until(browser, "return log.wsClose", lambda c: len(c) == 2)
            assert closed[1] == {"name": "good", "code": 1009, "reason": closed[1]["reason"]}

            # The echo channel was not disturbed by any of that.
            ch.send("still here")
            until(browser, "return log.ws", lambda w: len(w) == 2)

        # A page from another origin (the private listener's own page) is refused by echo.
        browser.get(origin_of(private.url) + "/")
        browser.execute_script("openWs('foreign', arguments[0], ['1'])", echo.url)
        closed = until(browser, "return log.wsClose")
        assert closed == [{"name": "foreign", "code": 1006, "reason": ""}]
        with (  # and echo still serves everyone else
            ipcwire.connect(echo.url, codec="json", timeout=WAIT) as client,
            echo.accept(timeout=WAIT) as ch,
        ):
            client.send("after the refusal")
            assert ch.recv(timeout=WAIT) == "after the refusal"


def test_server_sent_events_in_a_browser_resume_after_a_drop(browser: webdriver.Chrome) -> None:
    with ipcwire.listen(
        "sse+http://127.0.0.1:0/events", codec="json", retry=0.05, replay=8, pages={"/": PAGE}
    ) as site:
        browser.get(origin_of(site.url) + "/")
        browser.execute_script("openSse('/events')")
        with site.accept(timeout=WAIT) as ch:
            assert isinstance(ch, SseServerChannel)
            ch.send_many([{"n": 1}, {"n": 2}, {"n": 3}])
            until(browser, "return log.sse", lambda s: len(s) == 3)

            # The server drops the connection; events sent meanwhile are replayed on resume.
            ch.drop_connection()
            ch.send_many([{"n": 4}, {"n": 5}])
            events = until(browser, "return log.sse", lambda s: len(s) == 5)
            assert [e["data"] for e in events] == [{"n": i} for i in range(1, 6)]
            assert [e["id"] for e in events] == [f"{ch.stream_id}-{i}" for i in range(1, 6)]
            assert until(browser, "return log.sseOpen") == 2  # EventSource reconnected once

            # Away for longer than the replay buffer: the page is told what it lost.
            ch.drop_connection()
            ch.send_many([{"n": i} for i in range(6, 26)])  # 20 events, 8 kept
            gaps = until(browser, "return log.sseGap")
            assert gaps[0]["lost"] == 12
            assert (gaps[0]["first"], gaps[0]["last"]) == (6, 17)
            events = until(browser, "return log.sse", lambda s: len(s) == 13)
            assert [e["data"]["n"] for e in events[5:]] == list(range(18, 26))

            # The server ends the stream: the page gets the end event and stops.
            ch.close()
            ended = until(browser, "return log.sseEnd")
            assert ended == [{"reason": "the server closed the stream"}]


FETCH = """
window.fetchResult = null;
fetch(arguments[0], {method: 'POST', headers: {'Content-Type': 'application/json'},
                     body: JSON.stringify({op: 'ping'})})
  .then(r => r.json().then(j => { window.fetchResult = {status: r.status, body: j}; }))
  .catch(e => { window.fetchResult = {error: String(e)}; });
"""


def test_rest_from_a_browser_page_of_another_origin(browser: webdriver.Chrome) -> None:
    """fetch() from a dashboard page on another port: refused unless its origin is listed in
    origins= (a preflight is answered, the reply carries Access-Control-Allow-Origin). Before,
    the preflight got 405, so an allowed page could not call the endpoint, while a plain form
    or text/plain fetch from any site reached the handler."""
    import threading

    with ipcwire.listen("sse+http://127.0.0.1:0/events", pages={"/": PAGE}) as site:
        page_origin = origin_of(site.url)
        browser.get(page_origin + "/")
        with ipcwire.listen("http://127.0.0.1:0", codec="json", origins=[page_origin]) as rest:

            def answer() -> None:
                with rest.accept(timeout=WAIT) as ch:
                    ch.send({"echo": ch.recv(timeout=WAIT)})

            t = threading.Thread(target=answer)
            t.start()
            browser.execute_script(FETCH, rest.url + "/")
            got = until(browser, "return window.fetchResult")
            t.join(WAIT)
            assert got == {"status": 200, "body": {"echo": {"op": "ping"}}}, got

        with ipcwire.listen("http://127.0.0.1:0", codec="json") as closed_to_pages:
            browser.execute_script(FETCH, closed_to_pages.url + "/")
            got = until(browser, "return window.fetchResult")
            assert "error" in got, got  # the browser saw no CORS answer: Failed to fetch
            with pytest.raises(ipcwire.Timeout):  # and nothing reached the application
                closed_to_pages.accept(timeout=0.5)
