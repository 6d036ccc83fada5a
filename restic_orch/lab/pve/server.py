"""HTTPS transport: a threaded server that speaks the PVE API wire format.

Wire details follow pve-http-server: the error text is the HTTP reason phrase (first
line) and also the JSON body's "message"; 401s carry no body and are delayed 3 s.
"""

from __future__ import annotations

import hmac
import json
import re
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from . import layout
from .app import Ctx, Router, build_router
from .certs import ensure_cert, fingerprint
from .errors import ApiError, TaskError
from .tasks import TaskManager

MAX_POST = 64 * 1024


class _App:
    def __init__(self, root: Path, router: Router, tasks: TaskManager, fp: str) -> None:
        self.root, self.router, self.tasks, self.fingerprint = root, router, tasks, fp
        self.started = time.time()
        self.access_log = root / "access.log"
        self._log_lock = threading.Lock()

    def log(self, line: str) -> None:
        with self._log_lock, self.access_log.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")


def authenticate(root: Path, header: str | None) -> str:
    """Return the token id (the 'user' of token requests) or raise ApiError(401)."""
    m = re.search(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)", header or "")
    if not m:
        raise ApiError(401, "No ticket")
    value = urllib.parse.unquote(m.group(1))
    tokenid, sep, secret = value.partition("=")
    tm = re.match(r"^(\S+@\S+)!([A-Za-z][A-Za-z0-9.\-_]+)$", tokenid)
    if not sep or not tm:
        raise ApiError(401, "invalid token value!")
    tokens = layout.load_node(root).get("tokens", {})
    if tokenid not in tokens:
        if not any(t.split("!", 1)[0] == tm.group(1) for t in tokens):
            raise ApiError(401, f"no such user ('{tm.group(1)}')")
        raise ApiError(401, f"no such token '{tm.group(2)}' for user '{tm.group(1)}'")
    if not hmac.compare_digest(tokens[tokenid]["secret"].encode(), secret.encode()):
        raise ApiError(401, "invalid token value!")
    return tokenid


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 60
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        self.server.app.log(f"{self.client_address[0]} - [{self.log_date_time_string()}] {format % args}")

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle()

    def do_POST(self) -> None:  # noqa: N802
        self._handle()

    def do_PUT(self) -> None:  # noqa: N802
        self._handle()

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle()

    def _send(self, status: int, message: str, payload: Any = None, errors: dict[str, str] | None = None,
              body: bool = True, total: int | None = None) -> None:
        reason = (message.split("\n", 1)[0] if message else "") or "OK"
        if body:
            doc: dict[str, Any] = {"data": payload}
            if status >= 400:
                doc["message"] = message
            if errors:
                doc["errors"] = errors
            if total is not None and status < 400:
                doc["total"] = total
            raw = json.dumps(doc).encode()
        else:
            raw = b""
        # http.server writes the status line as latin-1; keep non-latin-1 text from breaking it.
        self.send_response(status, reason.encode("latin-1", "replace").decode("latin-1"))
        if raw:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", self.date_time_string())
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(raw)

    def _params(self, method: str) -> dict[str, str]:
        params: dict[str, str] = {}
        length = int(self.headers.get("Content-Length") or 0)
        if length and method not in ("POST", "PUT"):
            raise ApiError(501, f"Unexpected content for method '{method}'")
        if length > MAX_POST:
            raise ApiError(501, "for data too large")
        raw = self.rfile.read(length) if length else b""
        if raw and (self.headers.get("Content-Type") or "").startswith("application/json"):
            params.update({k: _stringify(v) for k, v in json.loads(raw).items()})
        elif raw:
            _merge(params, urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True))
        query = urllib.parse.urlsplit(self.path).query
        _merge(params, urllib.parse.parse_qsl(query, keep_blank_values=True))
        params.pop("_dc", None)  # ExtJS cache buster, dropped by PVE too
        return params

    def _handle(self) -> None:
        app = self.server.app
        method = self.command
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        m = re.match(r"^/api2/+([a-z][a-z0-9]+)(/.*)?$", path)
        if not m:
            self._send(501, f"no such file '{path}'", body=False)
            return
        fmt, rel_uri = m.group(1), m.group(2) or "/"
        try:
            user = authenticate(app.root, self.headers.get("Authorization"))
        except ApiError as exc:
            # pveproxy delays every failed authentication by 3 seconds.
            time.sleep(float(layout.read_faults(app.root).get("auth_delay_seconds", 3)))
            self._send(exc.status, exc.message, body=False)
            return
        if fmt != "json":
            self._send(501, f"no formatter for uri {rel_uri}, {fmt}", body=False)
            return
        ctx = Ctx(app.root, layout.load_node(app.root)["node"], app.tasks, user, app.fingerprint, app.started)
        try:
            params = self._params(method)
            res = app.router.dispatch(ctx, method, rel_uri, params)
        except ApiError as exc:
            self._send(exc.status, exc.message, errors=exc.errors)
            return
        except TaskError as exc:
            msg = str(exc)
            self._send(500, msg if msg.endswith("\n") else msg + "\n")
            return
        except Exception as exc:  # keep the server alive; report like an unexpected Perl die
            self._send(500, f"{type(exc).__name__}: {exc}\n")
            return
        self._send(200, "OK", res.data, total=res.total)


def _stringify(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):  # a JSON array: the same list repeated form fields give
        return "\0".join(_stringify(v) for v in value)
    return str(value)


def _merge(params: dict[str, str], pairs: list[tuple[str, str]]) -> None:
    # Repeated keys become NUL-separated values, like pve-http-server's decode_urlencoded.
    seen: dict[str, str] = {}
    for key, value in pairs:
        seen[key] = f"{seen[key]}\0{value}" if key in seen else value
    params.update(seen)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], app: _App, sslctx: ssl.SSLContext) -> None:
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        super().__init__(addr, _Handler)
        self.app = app
        self.sslctx = sslctx

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, so a slow client cannot block accept().
        request.settimeout(60)
        try:
            tls = self.sslctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            request.close()
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients dropping connections (e.g. a test killing a poller) are not worth a traceback.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, ssl.SSLError, TimeoutError)):
            super().handle_error(request, client_address)


def serve(root: Path, host: str = "127.0.0.1", port: int = 8006, certfile: Path | None = None,
          keyfile: Path | None = None) -> None:
    """Serve the fake node's API until SIGTERM/SIGINT; prints one 'listening https://h:p' line.

    port 0 picks a free port (the printed line tells which). Without certfile/keyfile a
    self-signed certificate is created as R/pve-ssl.pem / R/pve-ssl.key on first start.
    """
    root = Path(root).resolve()
    node = layout.load_node(root)["node"]
    certfile = Path(certfile) if certfile else root / "pve-ssl.pem"
    keyfile = Path(keyfile) if keyfile else root / "pve-ssl.key"
    ensure_cert(certfile, keyfile, node)
    sslctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sslctx.load_cert_chain(certfile, keyfile)
    app = _App(root, build_router(), TaskManager(root, node), fingerprint(certfile))
    httpd = _Server((host, port), app, sslctx)

    def _stop(_signum: int, _frame: Any) -> None:
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    shown = f"[{host}]" if ":" in host else host
    print(f"listening https://{shown}:{httpd.server_address[1]}", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
