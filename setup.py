"""Build script: everything is declared in pyproject.toml except the optional C extension.

The extension is optional: when it cannot be compiled the package installs anyway and the
pure-Python fallbacks are used (``ipcwire platforms`` says which one is active).
Set ``IPCWIRE_SANITIZE=1`` to build it with AddressSanitizer and UndefinedBehaviorSanitizer.
"""

from __future__ import annotations

import os

from setuptools import setup

ext_modules: list[object] = []

if os.environ.get("IPCWIRE_NO_EXT") != "1":
    from setuptools import Extension

    extra_compile = ["-O2", "-std=c11", "-Wall", "-Wextra"]
    extra_link: list[str] = []
    if os.environ.get("IPCWIRE_SANITIZE") == "1":
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-O1", "-g"]
        extra_compile += flags
        extra_link += flags
    sources = [
        os.path.join("src", "ipcwire", "_ext", name)
        for name in sorted(os.listdir(os.path.join("src", "ipcwire", "_ext")))
        if name.endswith(".c")
    ] if os.path.isdir(os.path.join("src", "ipcwire", "_ext")) else []
    if sources:
        ext_modules.append(
            Extension(
                "ipcwire._ext._native",
                sources=sources,
                extra_compile_args=extra_compile,
                extra_link_args=extra_link,
                optional=True,
            )
        )

setup(ext_modules=ext_modules)  # type: ignore[arg-type]
