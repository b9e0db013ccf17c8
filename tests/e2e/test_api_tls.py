"""TLS and proxies on a real `flwd serve`: HTTPS with `--tls-cert`/`--tls-key` (a
self-signed certificate made here), found by the CLI through `server.json`; start-up
refusals with one `error:` line; and `X-Forwarded-For` believed only from the peers named
with `--forwarded-allow-ips`."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e.conftest import START_TIMEOUT, ServerProcess

pytestmark = pytest.mark.e2e
FORWARDED = "203.0.113.9"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for localhost, 127.0.0.1 and ::1, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "flwd test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


class TLSServer(ServerProcess):
    """A `flwd serve` with extra options; HTTPS when given a certificate."""

    def __init__(self, tmp: Path, *options: str, ca: Path | None = None) -> None:
        super().__init__(tmp)
        self.options = list(options)
        self.ca = ca
        if ca is not None:
            self.url = f"https://127.0.0.1:{self.port}"
            self.api = self.url + "/api/v1"

    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca)) if self.ca else True

    def start(self) -> None:
        argv = [sys.executable, "-m", "flwd", "serve", "--port", str(self.port)]
        argv += ["--jobs", f"local-fs={self.jobs}", "--data-dir", str(self.data), *self.options]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.tmp, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"flwd serve exited early:\n{self.log.read_text()}")
            try:
                health = httpx.get(self.api + "/health", timeout=1.0, verify=self.verify())
                if health.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"flwd serve did not become healthy:\n{self.log.read_text()}")

    def flwd(
        self, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "flwd", *args, "--data-dir", str(self.data)],
            cwd=self.tmp,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=60,
        )


def test_https_server_is_found_and_trusted_by_the_cli(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = TLSServer(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key), ca=cert)
    server.start()
    try:
        info = json.loads((server.data / "server.json").read_text())
        assert info["url"] == f"https://127.0.0.1:{server.port}"
        assert Path(info["tls_cert"]) == cert.absolute()
        # the CLI finds the server through server.json and trusts its certificate
        done = server.flwd("run", "hello", "--arg", "name=tls", "--json")
        assert done.returncode == 0, done.stderr
        run = json.loads(done.stdout)
        assert run["status"] == "success"
        # it was the server that ran it (over HTTPS), not the CLI on its own
        with httpx.Client(base_url=server.api, verify=server.verify(), timeout=30) as http:
            detail = http.get(f"/runs/{run['run_id']}").json()
            assert detail["result"]["value"] == {"greeting": "hello tls"}
            created = http.post("/runs", json={"job_id": "hello", "async": False})
            assert created.status_code == 201
            assert created.json()["status"] == "success"
        # plain HTTP on the TLS port gets no answer; an untrusting client refuses the cert
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{server.port}/api/v1/health", timeout=5)
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.api + "/health", timeout=5)
        # FLWD_CA_CERT naming an unreadable file is one clear line
        bad = server.flwd("runs", env={"FLWD_CA_CERT": str(tmp_path / "none.pem")})
        assert bad.returncode != 0
        assert bad.stderr.startswith("error: ") and "none.pem" in bad.stderr
        assert "Traceback" not in bad.stderr
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--tls-cert", "{cert}"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "{tmp}/missing.pem", "--tls-key", "{key}"], "missing.pem"),
        (["--tls-cert", "{key}", "--tls-key", "{key}"], "not a usable PEM certificate"),
        # an encrypted key is refused, not prompted for
        (["--tls-cert", "{cert}", "--tls-key", "{locked}"], "not a usable PEM certificate"),
    ],
)
def test_unusable_tls_files_stop_start_up(
    tmp_path: Path, options: list[str], expected: str
) -> None:
    cert, key = self_signed(tmp_path)
    locked = tmp_path / "locked.pem"
    private = serialization.load_pem_private_key(key.read_bytes(), password=None)
    locked.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret-pass"),
        )
    )
    values = {"cert": str(cert), "key": str(key), "tmp": str(tmp_path), "locked": str(locked)}
    argv = [sys.executable, "-m", "flwd", "serve", "--port", "0", "--jobs", str(tmp_path)]
    argv += ["--data-dir", str(tmp_path / "data"), *(o.format(**values) for o in options)]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]


def access_line_client(server: ServerProcess, path: str) -> str:
    """The client address of the access-log line of `path` (waits for it, bounded)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for line in server.log.read_text().splitlines():
            if f'"GET {path} HTTP/1.1" 200' in line:
                return line.split(" - ")[0].rsplit(" ", 1)[-1].rsplit(":", 1)[0]
        time.sleep(0.05)
    raise AssertionError(f"no access line for {path}:\n{server.log.read_text()}")


@pytest.mark.parametrize(
    ("options", "seen"),
    [([], "127.0.0.1"), (["--forwarded-allow-ips", "127.0.0.1"], FORWARDED)],
)
def test_forwarded_for_is_believed_only_from_allowed_peers(
    tmp_path: Path, options: list[str], seen: str
) -> None:
    # uvicorn's own variable must not widen what flwd trusts
    server = TLSServer(tmp_path, "--access-log", *options)
    server.env["FORWARDED_ALLOW_IPS"] = "*"
    server.start()
    try:
        headers = {"X-Forwarded-For": FORWARDED, "X-Forwarded-Proto": "https"}
        with httpx.Client(base_url=server.url, timeout=30) as http:
            assert http.get("/api/v1/jobs?namespace=demo", headers=headers).status_code == 200
            # the refusal log line names the same address
            refused = http.get("/api/v1/jobs", headers={**headers, "Host": "evil.example"})
            assert refused.status_code == 400
        assert access_line_client(server, "/api/v1/jobs?namespace=demo") == seen
        assert f"refused GET /api/v1/jobs from {seen}: host-not-allowed" in server.log.read_text()
    finally:
        server.stop()
