"""`trajkit view --serve`: the built site over HTTP on 127.0.0.1 only.

The site links screenshots by relative path (they stay in the run folder), so the server's root is
the folder holding both the site and those files; it answers only for files under the site folder
and for the screenshots the site links to, never with a directory listing.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

HOST = "127.0.0.1"  # never another interface: trajectories may hold private data


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args, site: Path, allowed: frozenset[Path], **kwargs):
        self.site = site
        self.allowed = allowed
        super().__init__(*args, **kwargs)

    def _target(self) -> Path | None:
        rel = posixpath.normpath(unquote(urlsplit(self.path).path)).lstrip("/")
        path = (Path(self.directory) / rel).resolve()
        if path.is_dir():
            path = path / "index.html"
        if path == self.site or self.site in path.parents or path in self.allowed:
            return path if path.is_file() else None
        return None

    def send_head(self):
        if self._target() is None:  # outside what the site may show, or absent
            self.send_error(404)
            return None
        return super().send_head()

    def translate_path(self, path: str) -> str:
        return str(self._target())

    def list_directory(self, path):  # never list a folder
        self.send_error(404)
        return None

    def log_message(self, format: str, *args) -> None:
        pass  # one line per request would drown the URL the user needs


def make_server(site: Path, files: Iterable[Path], port: int = 0) -> tuple[ThreadingHTTPServer, str]:
    """A server for `site` (a folder with index.html) and the linked `files`; (server, page URL).
    `port` 0 takes a free one."""
    site = Path(site).resolve()
    allowed = frozenset(Path(f).resolve() for f in files)
    root = Path(os.path.commonpath([str(site), *(str(f.parent) for f in allowed)]))
    handler = partial(_Handler, directory=str(root), site=site, allowed=allowed)
    server = ThreadingHTTPServer((HOST, port), handler)
    rel = site.relative_to(root).as_posix()
    prefix = "" if rel == "." else f"/{rel}"
    return server, f"http://{HOST}:{server.server_address[1]}{prefix}/index.html"
