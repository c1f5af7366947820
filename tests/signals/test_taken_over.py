"""graceful_shutdown() (and any ipcwire signal handling) that replaces a handler a framework
installed (uvicorn's handle_exit, say) warns: that handler no longer runs, and with it the
framework's own shutdown (draining requests in flight). Before, it was replaced silently and
uvicorn under SIGTERM never drained (helper-142). asyncio.run()'s own SIGINT handler and
Python's defaults are not worth a warning."""

from __future__ import annotations

import pytest
from tests._proc import run_python

WORDS = "ipcwire now handles SIGTERM, for which __main__.framework_exit was installed"


@pytest.mark.parametrize("api", ["blocking", "asyncio"])
def test_a_framework_handler_taken_over_warns(api: str) -> None:
    use = "ipcwire.graceful_shutdown().close()" if api == "blocking" else "asyncio.run(aclose())"
    out = run_python(
        f"""
import asyncio, signal, warnings, ipcwire
from ipcwire import aio
def framework_exit(signum, frame):
    pass
async def aclose():
    g = aio.graceful_shutdown()
    await g.aclose()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    signal.signal(signal.SIGTERM, framework_exit)
    {use}
for w in seen:
    print(w.category.__name__, w.filename.endswith("<string>"), str(w.message))
"""
    )
    assert out.startswith(f"RuntimeWarning True signal:TERM,INT: {WORDS}"), out
    assert out.count("RuntimeWarning") == 1, out  # not for asyncio.run()'s SIGINT handler
    assert "lifespan" in out


def test_no_warning_without_one() -> None:
    out = run_python(
        """
import asyncio, warnings, ipcwire
from ipcwire import aio
async def main():
    g = aio.graceful_shutdown()
    await g.aclose()
with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    ipcwire.graceful_shutdown().close()
    asyncio.run(main())
print(len([w for w in seen if "ipcwire now handles" in str(w.message)]))
"""
    )
    assert out == "0", out
