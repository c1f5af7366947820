"""curl, a client no ipcwire code wrote, calls the REST endpoint (and gets clear errors)."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
from pathlib import Path

import ipcwire
from ipcwire import aio
from ipcwire.aio.channel import AioChannel
from ipcwire.channel import Channel, Listener

CURL = shutil.which("curl")  # ./dev test installs it: a missing curl is a failure, not a skip


def curl(*args: str, data: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    """Run curl; return the status, the response headers (lower-case) and the body."""
    assert CURL is not None, "curl is missing: run the tests with ./dev test"
    out = subprocess.run(
        [CURL, "-sS", "-i", "--max-time", "10", *args],
        input=data,
        capture_output=True,
        check=True,
        timeout=20,
    ).stdout
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return status, headers, body


def test_request_reply_and_typed_failures(json_echo: Listener) -> None:
    url = json_echo.url
    auth = ("-H", "Authorization: Bearer s3cret")
    ctype = ("-H", "Content-Type: application/json")

    status, headers, body = curl("-X", "POST", *auth, *ctype, "--data-binary", '{"op":"ping"}', url)
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"echo": {"op": "ping"}}

    # No token, and a wrong one: 401 with a Bearer challenge.
    for extra in ((), ("-H", "Authorization: Bearer nope")):
        status, headers, body = curl("-X", "POST", *extra, *ctype, "--data-binary", "{}", url)
        assert status == 401
        assert headers["www-authenticate"].startswith("Bearer")
        assert json.loads(body)["code"] == "unauthorized"

    # A malformed body: 400, a problem document that says why.
    status, headers, body = curl("-X", "POST", *auth, *ctype, "--data-binary", '{"op":', url)
    assert status == 400
    assert headers["content-type"].startswith("application/problem+json")
    problem = json.loads(body)
    assert problem["code"] == "malformed" and "json" in problem["detail"].lower()
    # JSON whose string is not UTF-8: the same.
    status, _, body = curl("-X", "POST", *auth, *ctype, "--data-binary", "@-", url, data=b'"\xb2"')
    assert status == 400
    assert json.loads(body)["code"] == "malformed"

    # A wait that is not a number of seconds: 400 naming the header.
    for bad in ("soon", "-1", "nan"):
        timeout = ("-H", f"Ipcwire-Timeout: {bad}")
        status, _, body = curl("-X", "POST", *auth, *ctype, *timeout, "--data-binary", "{}", url)
        assert status == 400
        assert "Ipcwire-Timeout must be seconds" in json.loads(body)["detail"]

    # Over max_frame (1000 bytes here): 413 with the limit, before the handler sees anything.
    big = json.dumps({"x": "y" * 2000}).encode()
    status, _, body = curl("-X", "POST", *auth, *ctype, "--data-binary", "@-", url, data=big)
    assert status == 413
    assert json.loads(body)["limit"] == 1000

    # The wrong media type: 415 naming the right one.
    status, _, body = curl("-X", "POST", *auth, "-H", "Content-Type: text/plain", "-d", "{}", url)
    assert status == 415 and "application/json" in json.loads(body)["detail"]

    # Unknown paths and methods.
    assert curl(*auth, url + "/nope")[0] == 404
    status, headers, _ = curl("-X", "PUT", *auth, url)
    assert status == 405 and headers["allow"] == "POST"

    # After all that, the server still serves.
    status, _, body = curl("-X", "POST", *auth, *ctype, "--data-binary", "[1,2]", url)
    assert status == 200 and json.loads(body) == {"echo": [1, 2]}


def test_openapi_description(json_echo: Listener) -> None:
    status, headers, body = curl(
        "-H", "Authorization: Bearer s3cret", json_echo.url + "/openapi.json"
    )
    assert status == 200 and headers["content-type"].startswith("application/json")
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.1")
    assert "/api" in doc["paths"] and "/api/channels" in doc["paths"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    post = doc["paths"]["/api"]["post"]
    assert "application/json" in post["requestBody"]["content"]
    assert {"200", "400", "401", "413", "415", "504"} <= set(post["responses"])


def test_curl_over_a_unix_socket(sock_dir: Path) -> None:
    path = sock_dir / "rest.sock"
    with ipcwire.listen(f"http+unix://{path}?prefix=/v1", codec="msgpack") as lis:

        def handler(ch: Channel) -> None:
            msg = ch.recv(timeout=10)
            ch.send({"pid_seen": ch.peer.pid if ch.peer else None, "got": msg})

        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        import msgspec

        body = msgspec.msgpack.encode({"hello": b"\x00\x01"})
        status, headers, out = curl(
            "--unix-socket", str(path), "-X", "POST",
            "-H", "Content-Type: application/msgpack", "--data-binary", "@-",
            "http://localhost/v1", data=body,
        )  # fmt: skip
        assert status == 200 and headers["content-type"] == "application/msgpack"
        reply = msgspec.msgpack.decode(out)
        assert reply["got"] == {"hello": b"\x00\x01"}
        assert isinstance(reply["pid_seen"], int)  # SO_PEERCRED: curl's pid
    t.join(5)


def test_no_reply_is_204_and_slow_reply_is_504() -> None:
    with ipcwire.listen("http://127.0.0.1:0/", codec="json") as lis:
        release = threading.Event()

        def handler(ch: Channel) -> None:
            msg = ch.recv(timeout=10)
            if msg == "slow":
                release.wait(10)
            # "quiet" and "slow": no reply; the handler returns and the channel closes.

        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        ctype = ("-H", "Content-Type: application/json")
        assert curl("-X", "POST", *ctype, "-d", '"quiet"', lis.url)[0] == 204
        status, _, body = curl(
            "-X", "POST", *ctype, "-H", "Ipcwire-Timeout: 0.2", "-d", '"slow"', lis.url
        )
        release.set()
        assert status == 504 and json.loads(body)["code"] == "timeout"
    t.join(5)


def test_a_handler_that_raises_is_500_and_the_server_goes_on() -> None:
    """A handler that raised before replying was answered 204 No Content, as if it had
    chosen not to reply: curl and fetch() saw success. Now it is 500 with a problem
    document (the exception stays in the server's log), blocking and asyncio serve()."""
    ctype = ("-H", "Content-Type: application/json")

    def check(url: str) -> None:
        status, headers, body = curl("-X", "POST", *ctype, "-d", '"boom"', url)
        assert status == 500
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(body)["code"] == "server_error"
        assert "secret detail" not in body.decode()
        assert curl("-X", "POST", *ctype, "-d", '"quiet"', url)[0] == 204
        assert curl("-X", "POST", *ctype, "-d", '"echo"', url)[2] == b'"echo"'

    with ipcwire.listen("http://127.0.0.1:0/", codec="json") as lis:

        def handler(ch: Channel) -> None:
            msg = ch.recv(timeout=10)
            if msg == "boom":
                raise RuntimeError("secret detail")
            if msg == "echo":
                ch.send(msg)

        t = threading.Thread(target=lis.serve, args=(handler,), daemon=True)
        t.start()
        check(lis.url)
    t.join(5)

    async def main() -> None:
        async with await aio.listen("http://127.0.0.1:0/", codec="json") as alis:

            async def ahandler(ch: AioChannel) -> None:
                msg = await ch.recv(timeout=10)
                if msg == "boom":
                    raise RuntimeError("secret detail")
                if msg == "echo":
                    await ch.send(msg)

            serving = asyncio.ensure_future(alis.serve(ahandler))
            await asyncio.to_thread(check, alis.url)
        await serving

    asyncio.run(main())


def test_a_long_poll_wait_that_is_not_seconds_is_400(json_echo: Listener) -> None:
    """GET .../messages?wait= parsed its value with float() alone: a negative wait or NaN
    answered 204 at once (NaN went to the event loop as a timer's deadline), where the
    wait headers answer 400."""
    auth = ("-H", "Authorization: Bearer s3cret")
    status, _, body = curl(
        "-X", "POST", *auth, "--data-binary", '{"ipcwire": 1, "codec": "json"}',
        json_echo.url + "/channels",
    )  # fmt: skip
    assert status == 201
    messages = f"{json_echo.url}/channels/{json.loads(body)['channel']}/messages"
    for bad in ("soon", "-1", "nan"):
        status, _, body = curl(*auth, f"{messages}?wait={bad}")
        assert status == 400
        assert "wait= must be seconds" in json.loads(body)["detail"]
    assert curl(*auth, f"{messages}?wait=0")[0] == 204


def test_a_request_cut_off_by_the_listeners_close_is_503() -> None:
    """A plain request whose handler was still running when the listener closed was
    answered 204 No Content (serve() closes the channels in flight), as if handled. Now it
    is 503 (shutting_down), blocking and asyncio."""
    ctype = ("-H", "Content-Type: application/json")

    def posted(url: str, out: list[tuple[int, dict[str, str], bytes]]) -> threading.Thread:
        t = threading.Thread(target=lambda: out.append(curl("-X", "POST", *ctype, "-d", "1", url)))
        t.start()
        return t

    def check(out: list[tuple[int, dict[str, str], bytes]]) -> None:
        status, _, body = out[0]
        assert status == 503 and json.loads(body)["code"] == "shutting_down"

    got, release = threading.Event(), threading.Event()

    def handler(ch: Channel) -> None:
        ch.recv(timeout=10)
        got.set()
        release.wait(10)  # no reply before the listener closes

    lis = ipcwire.listen("http://127.0.0.1:0/", codec="json")
    serving = threading.Thread(target=lis.serve, args=(handler,))
    serving.start()
    out: list[tuple[int, dict[str, str], bytes]] = []
    client = posted(lis.url, out)
    assert got.wait(10)
    lis.close()
    client.join(20)
    release.set()
    serving.join(10)
    check(out)

    async def main() -> None:
        agot = asyncio.Event()

        async def ahandler(ch: AioChannel) -> None:
            await ch.recv(timeout=10)
            agot.set()
            await asyncio.sleep(10)

        alis = await aio.listen("http://127.0.0.1:0/", codec="json")
        aserving = asyncio.ensure_future(alis.serve(ahandler))
        aout: list[tuple[int, dict[str, str], bytes]] = []
        aclient = posted(alis.url, aout)
        await asyncio.wait_for(agot.wait(), 10)
        await alis.aclose()
        await aserving
        await asyncio.to_thread(aclient.join, 20)
        check(aout)

    asyncio.run(main())
