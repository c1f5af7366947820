"""The I/O-free core: framing, codecs, the handshake and URL parsing.

Nothing in this package may import socket, asyncio, threading, selectors or select
(tests/core/test_no_io.py enforces it): it works on bytes alone, so the blocking and the
asyncio drivers of every mechanism share it, and it is tested by splitting input at every
boundary.
"""
