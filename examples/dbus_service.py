"""D-Bus: a service on the session bus, a client process, and signals (publish/subscribe).

Run: python examples/dbus_service.py   (starts a private bus if there is no session bus)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile

import ipcwire
from ipcwire.dbus.blocking import DbusListener, subscribe

daemon = None
if not os.environ.get("DBUS_SESSION_BUS_ADDRESS"):
    exe = shutil.which("dbus-daemon")
    if exe is None:
        print("no session bus and no dbus-daemon here: nothing to show")
        sys.exit(0)
    sockdir = tempfile.mkdtemp()
    sock = os.path.join(sockdir, "bus")
    daemon = subprocess.Popen(
        [exe, "--session", "--nofork", "--print-address=1", f"--address=unix:path={sock}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert daemon.stdout is not None
    os.environ["DBUS_SESSION_BUS_ADDRESS"] = daemon.stdout.readline().strip()
    print("started a private session bus")

url = "dbus://session/io.ipcwire.Example/io/ipcwire/Example"
try:
    with (
        ipcwire.listen(url, codec="json") as service,
        subscribe(url, topic="status", codec="json") as events,
    ):
        client = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import ipcwire\n"
                f"with ipcwire.connect({url!r}, codec='json', timeout=5) as ch:\n"
                "    print('client got:', ch.request({'op': 'ping'}, timeout=5), flush=True)\n",
            ]
        )
        with service.accept(timeout=10) as ch:
            assert ch.peer is not None
            print("request from pid", ch.peer.pid, "uid", ch.peer.uid, ":", ch.recv(timeout=5))
            ch.send({"pong": True})
            client.wait(10)
        assert isinstance(service, DbusListener)  # publish() is D-Bus's own
        service.publish({"state": "idle"}, topic="status")  # a D-Bus signal
        print("subscriber got:", events.recv_event(timeout=5))
finally:
    if daemon is not None:
        daemon.terminate()
        daemon.wait(5)
        shutil.rmtree(sockdir, ignore_errors=True)
