"""Machinery shared by the byte-stream mechanisms (unix, tcp, pipes...), blocking and asyncio."""
