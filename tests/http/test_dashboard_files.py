"""The dashboard's files: served at / without a token, with a strict content
security policy, every module the page imports present; the API behind them
still asks for a token."""

from __future__ import annotations

import hashlib
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from conveyor_server._dashboard import ASSETS
from tests.support.http import Http
from tests.support.server import ServerThread


def fetch(server: ServerThread, path: str) -> tuple[int, dict[str, str], bytes]:
    assert server.server is not None
    url = f"http://127.0.0.1:{server.server.http_port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_the_page_and_its_files_are_served_without_a_token_but_the_api_is_not(
    make_server: Callable[..., ServerThread], tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"sha256:{hashlib.sha256(b'a-token-for-the-page').hexdigest()} team\n")
    server = make_server(auth_tokens_file=str(tokens))
    status, headers, body = fetch(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<script type="module" src="/dashboard/js/app.js">' in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    status, headers, _ = fetch(server, "/dashboard/js/app.js")
    assert status == 200 and headers["Content-Type"].startswith("text/javascript")
    assert fetch(server, "/v1/tasks")[0] == 401
    assert Http(server, token="a-token-for-the-page").get("/v1/tasks").status == 200


def test_unknown_files_are_404_and_no_path_leaves_the_folder(server: ServerThread) -> None:
    for path in (
        "/dashboard/nope.js",
        "/dashboard/../_http.py",
        "/dashboard/%2e%2e/_http.py",
        "/dashboard/vendor/uPlot.LICENSE",  # shipped, not served: no type of ours
    ):
        status, _, body = fetch(server, path)
        assert status == 404, path
        assert b"_http" not in body or b"no route" in body


def test_every_file_the_page_refers_to_exists() -> None:
    """A module or stylesheet that is renamed but still imported would
    break the page in the browser only; this finds it at once."""
    referred: set[str] = set()
    index = (ASSETS / "index.html").read_text()
    referred.update(re.findall(r'(?:src|href)="/dashboard/([^"]+)"', index))
    for module in (ASSETS / "js").glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', module.read_text()):
            referred.add(f"js/{name}")
    assert "js/app.js" in referred and "vendor/uPlot.iife.min.js" in referred
    missing = sorted(name for name in referred if not (ASSETS / name).is_file())
    assert missing == []
