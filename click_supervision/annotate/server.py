"""HTTP front of the annotation tool: the standard library's threading server, JSON in and out.

Routes (every JSON answer is an object; a refused request gets a 4xx status and
`{"error": message}`, plus `"code"` where the page acts on it):

  GET  /                              the app (static/index.html)
  GET  /summary                       the summary page (static/summary.html)
  GET  /static/NAME                   a file of the app (only the files shipped in static/)
  GET  /images/IMAGE_ID               a dataset image, looked up by id (never by path)
  GET  /api/token                     the page token, {token}, for X-Click-Token
  GET  /api/example                   the instructions' example pair with its box
  GET  /api/summary?annotator=A       counts for the summary page and A's own row; with the
                                      admin token in X-Admin-Token, every annotator's row
                                      with gold results (403 for a wrong token)
  GET  /api/qualification?annotator=A the polygons of A's next qualification attempt
  POST /api/login        {annotator}                       A's state (qualified, progress)
  POST /api/qualification {annotator, attempt, clicks}     scored attempt with feedback
  GET  /api/next?annotator=A                               A's next pair, or pair null
  POST /api/click  {annotator, image_id, class, x, y, response_time_s}
  POST /api/undo   {annotator}
  POST /api/skip   {annotator, image_id, class}

Other sites' pages open in an annotator's browser must not act for them (cross-site request
forgery) nor read answers (DNS rebinding):

  * Every request needs a Host header naming this server: 127.0.0.1:PORT, localhost:PORT,
    --host:PORT or a name in --allowed_hosts; any other gets 421. A rebound name (evil.com
    resolving to 127.0.0.1) is refused, so no other site can read a page or an answer.
  * A request with an Origin header (browsers send it on every cross-site and every POST
    request) must come from http://HOST itself; another gets 403.
  * State-changing requests (every POST, and GET /api/next, which reserves a pair) need the
    server's page token in X-Click-Token (403, code `bad_token`, without it). The page reads it
    from GET /api/token, an answer only this origin can read (no CORS headers). A restarted
    server has a new token: the page fetches it again.
  * POST bodies must be `Content-Type: application/json` (415 otherwise): the content types an
    HTML form or a "simple" cross-site fetch can send are refused before the body is read.

No file outside the dataset's images and the app's own static files can be reached: static
files are looked up in a list of names read at start, and images by dataset id. Request bodies
and answers are strict JSON (no NaN or Infinity); a body the parser cannot take (nested too deep,
an integer too long) is a 400, and an unexpected failure a 500, never a dropped connection.
"""

import hmac
import http.server
import json
import mimetypes
import os
import secrets
import socket
import sys
import traceback
import urllib.parse

from click_supervision.annotate.app import ApiError

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'static')
MAX_BODY_BYTES = 64 * 1024
TOKEN_HEADER = 'X-Click-Token'
ADMIN_TOKEN_HEADER = 'X-Admin-Token'
_PAGES = {'/': 'index.html', '/index.html': 'index.html', '/summary': 'summary.html'}


def _refuse_constant(name):
  raise ValueError(f'{name} is not a JSON number')


def allowed_hosts(host, port, extra=()):
  """The Host header values the server answers to (lower case).

  Args:
    host: the address bound (`--host`).
    port: the port bound.
    extra: more names (`--allowed_hosts`): `name`, `name:port`, an IPv6 address with or without
      brackets, or `[address]:port`; a name without a port gets `port`.
  Returns:
    frozenset of `name:port` strings, plus the bare names when `port` is 80 (browsers leave the
    default port out of Host).
  """
  allowed = set()
  for name in ['127.0.0.1', 'localhost', host, *extra]:
    name = name.strip().lower()
    if not name:
      continue
    if (name.startswith('[') and ']:' in name) or (name[0] != '[' and name.count(':') == 1):
      allowed.add(name)  # Has its port.
      continue
    if ':' in name and not name.startswith('['):
      name = f'[{name}]'  # A bare IPv6 address.
    allowed.add(f'{name}:{port}')
    if port == 80:
      allowed.add(name)
  return frozenset(allowed)


def _static_files():
  return {name: os.path.join(STATIC_DIR, name) for name in os.listdir(STATIC_DIR)
          if os.path.isfile(os.path.join(STATIC_DIR, name))}


class _Handler(http.server.BaseHTTPRequestHandler):
  """One request; `self.server.app` is the `AnnotationApp`."""

  server_version = 'click_supervision-annotate'
  protocol_version = 'HTTP/1.1'

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    del format, args  # Quiet: the app logs what matters (resumes, flags); clicks are in the file.

  # --- Answers ---------------------------------------------------------------------------------

  def _send(self, status, body, content_type, extra_headers=()):
    self.send_response(status)
    self.send_header('Content-Type', content_type)
    self.send_header('Content-Length', str(len(body)))
    self.send_header('Cache-Control', 'no-store')
    self.send_header('X-Content-Type-Options', 'nosniff')
    # No framing by other sites (clicks tricked through an invisible frame).
    self.send_header('X-Frame-Options', 'DENY')
    for key, value in extra_headers:
      self.send_header(key, value)
    self.end_headers()
    if self.command != 'HEAD':
      self.wfile.write(body)

  def _json(self, status, payload):
    # allow_nan=False: browsers' JSON.parse refuses NaN and Infinity, which would break the page.
    self._send(status, json.dumps(payload, allow_nan=False).encode('utf-8'),
               'application/json; charset=utf-8')

  def _error(self, status, message, close=False, code=None):
    if close:
      self.close_connection = True
    payload = {'error': message} if code is None else {'error': message, 'code': code}
    body = json.dumps(payload, allow_nan=False).encode('utf-8')
    self._send(status, body, 'application/json; charset=utf-8',
               [('Connection', 'close')] if close else ())

  def _file(self, path):
    content_type = mimetypes.guess_type(path)[0] or 'application/octet-stream'
    if content_type.startswith('text/') or content_type.endswith('javascript'):
      content_type += '; charset=utf-8'
    with open(path, 'rb') as f:
      self._send(200, f.read(), content_type)

  # --- Requests --------------------------------------------------------------------------------

  def _check_origin(self):
    """ApiError unless Host names this server and Origin, when present, is this server."""
    hosts = self.headers.get_all('Host') or []
    host = hosts[0].strip().lower() if len(hosts) == 1 else None
    if host not in self.server.allowed_hosts:
      shown = 'no Host header' if not hosts else f'Host {", ".join(hosts)!r}'
      raise ApiError(421, f'this server answers to {", ".join(sorted(self.server.allowed_hosts))}'
                     f', not to {shown}; start it with --allowed_hosts=NAME to add the name the '
                     f'annotators use')
    origins = self.headers.get_all('Origin') or []
    if origins and (len(origins) > 1 or origins[0].strip().lower() != f'http://{host}'):
      raise ApiError(403, f'cross-origin request from {", ".join(origins)!r} refused: only pages '
                     f'of http://{host} may call this server')

  def _check_state_change(self, path):
    """ApiError unless a state-changing request carries the page token (and POST, JSON)."""
    token = self.headers.get(TOKEN_HEADER, '')
    if not hmac.compare_digest(token.encode('utf-8', 'replace'),
                               self.server.page_token.encode('utf-8')):
      raise ApiError(403, f'{self.command} {path} needs the page token in {TOKEN_HEADER} '
                     f'(from GET /api/token); reload the page', code='bad_token')
    if self.command == 'POST':
      media_type = (self.headers.get('Content-Type') or '').split(';', 1)[0].strip().lower()
      if media_type != 'application/json':
        raise ApiError(415, f'POST {path} needs Content-Type: application/json, not '
                       f'{self.headers.get("Content-Type") or "none"}')

  def _is_admin(self):
    """True for the admin token in X-Admin-Token, False without one, ApiError for another."""
    token = self.headers.get(ADMIN_TOKEN_HEADER)
    if token is None:
      return False
    if not hmac.compare_digest(token.encode('utf-8', 'replace'),
                               self.server.admin_token.encode('utf-8')):
      raise ApiError(403, 'wrong admin token: open the admin summary link printed when the '
                     'server started', code='bad_admin_token')
    return True

  def _read_json(self):
    """The request body as a JSON object, or ApiError."""
    length = self.headers.get('Content-Length')
    if length is None:
      raise ApiError(411, 'a POST needs a Content-Length header')
    try:
      length = int(length)
    except ValueError:
      raise ApiError(400, f'bad Content-Length {length!r}') from None
    if length < 0:
      raise ApiError(400, f'bad Content-Length {length}')
    if length > MAX_BODY_BYTES:
      raise ApiError(413, f'request body of {length} bytes is over the {MAX_BODY_BYTES} byte '
                     f'limit')
    data = self.rfile.read(length)
    try:
      body = json.loads(data.decode('utf-8'), parse_constant=_refuse_constant)
    except RecursionError:
      raise ApiError(400, 'the body is not JSON this server reads: nested too deep') from None
    except (UnicodeDecodeError, ValueError) as e:
      # ValueError also covers integers past Python's digit limit and NaN or Infinity.
      raise ApiError(400, f'the body is not JSON ({e})') from None
    if not isinstance(body, dict):
      raise ApiError(400, 'the body must be a JSON object')
    return body

  def _route(self):
    app = self.server.app
    url = urllib.parse.urlsplit(self.path)
    path = urllib.parse.unquote(url.path)
    query = urllib.parse.parse_qs(url.query)
    self._check_origin()
    if self.command == 'POST' or (self.command == 'GET' and path == '/api/next'):
      self._check_state_change(path)
    if self.command == 'HEAD' and path.startswith('/api/'):
      raise ApiError(405, 'HEAD is for pages, files and images; the API needs GET or POST')
    if self.command in ('GET', 'HEAD'):
      if path in _PAGES:
        return self._file(self.server.static_files[_PAGES[path]])
      if path.startswith('/static/'):
        name = path[len('/static/'):]
        if name not in self.server.static_files:
          raise ApiError(404, f'no such file: {path}')
        return self._file(self.server.static_files[name])
      if path.startswith('/images/'):
        return self._file(app.image_path(path[len('/images/'):]))
      annotator = query.get('annotator', [None])[0]
      if path == '/api/token':
        return self._json(200, {'token': self.server.page_token})
      if path == '/api/example':
        return self._json(200, app.example())
      if path == '/api/summary':
        return self._json(200, app.summary(annotator, admin=self._is_admin()))
      if path == '/api/qualification':
        return self._json(200, app.qualification_test(annotator))
      if path == '/api/next':
        return self._json(200, app.next_pair(annotator))
      raise ApiError(404, f'no such page: {path}')
    if self.command == 'POST':
      handlers = {
          '/api/login': lambda b: app.state(b.get('annotator')),
          '/api/qualification': lambda b: app.submit_qualification(
              b.get('annotator'), b.get('attempt'), b.get('clicks')),
          '/api/click': lambda b: app.submit_click(
              b.get('annotator'), b.get('image_id'), b.get('class'), b.get('x'), b.get('y'),
              b.get('response_time_s')),
          '/api/undo': lambda b: app.undo(b.get('annotator')),
          '/api/skip': lambda b: app.skip(b.get('annotator'), b.get('image_id'), b.get('class')),
      }
      if path not in handlers:
        raise ApiError(404, f'no such endpoint: POST {path}')
      return self._json(200, handlers[path](self._read_json()))
    raise ApiError(405, f'method {self.command} is not allowed')

  def _handle(self):
    try:
      self._route()
    except ApiError as e:
      # After a refused body (413, 411) the unread bytes would poison a kept-alive connection.
      self._error(e.status, e.message, close=self.command == 'POST', code=e.code)
    except (BrokenPipeError, ConnectionResetError):
      pass
    except Exception as e:  # pylint: disable=broad-except
      # A bug must not leave the page waiting on a closed connection; the trace is for the log.
      traceback.print_exc(file=sys.stderr)
      try:
        self._error(500, f'internal error ({type(e).__name__}); the server log has details',
                    close=True)
      except OSError:
        pass

  do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _handle  # noqa: N815


class AnnotationServer(http.server.ThreadingHTTPServer):
  """A threading HTTP server bound to `(host, port)` that serves `app`.

  Attributes:
    app: the `AnnotationApp`.
    url: `http://host:port` actually bound (port 0 picks a free one).
    allowed_hosts: the Host header values answered (see `allowed_hosts`).
    page_token: the token state-changing requests carry in X-Click-Token; new at each start.
    admin_token: the token of the summary's full view (X-Admin-Token); new at each start.
    admin_url: the summary page's admin view, `url/summary?token=admin_token`.
  """

  daemon_threads = True
  # The listen backlog: socketserver's 5 reset about 5 % of the connections of 50 annotators
  # arriving at once (a class starting together); the kernel caps it at net.core.somaxconn.
  request_queue_size = 128

  def __init__(self, app, host='127.0.0.1', port=8000, extra_hosts=()):
    """Binds and listens (serve_forever answers).

    Args:
      app: the `AnnotationApp`.
      host: address to bind.
      port: port to bind; 0 picks a free one.
      extra_hosts: more names the server answers to (`--allowed_hosts`, see `allowed_hosts`).
    """
    self.address_family = socket.AF_INET6 if ':' in host else socket.AF_INET
    super().__init__((host, port), _Handler)
    self.app = app
    self.static_files = _static_files()
    self.allowed_hosts = allowed_hosts(host, self.server_address[1], extra_hosts)
    self.page_token = secrets.token_urlsafe(32)
    self.admin_token = secrets.token_urlsafe(32)
    shown_host = f'[{host}]' if ':' in host else host
    self.url = f'http://{shown_host}:{self.server_address[1]}'
    self.admin_url = f'{self.url}/summary?token={self.admin_token}'
