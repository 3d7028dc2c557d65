"""OpenMRS over https with a certificate from a private CA: refused clearly, trusted with OPENMRS_CA_BUNDLE.

The CA and the server certificate are made by the `openssl` command line tool for each test run; the
emulator is served over real TLS on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tm2_pipeline.openmrs.client import OpenMRSClient
from tm2_pipeline.openmrs.client_config import ClientConfig
from tm2_pipeline.openmrs.emulator.server import SandboxServer, open_sandbox
from tm2_pipeline.openmrs.errors import OpenMRSConfigError
from tm2_pipeline.settings import SANDBOX_PASSWORD, SANDBOX_USERNAME

pytestmark = pytest.mark.integration

_SERVER_EXTENSIONS = """\
basicConstraints = CA:FALSE
subjectAltName = IP:127.0.0.1
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
authorityKeyIdentifier = keyid
"""


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory) -> dict[str, Path]:
    """A hospital-style CA, and a certificate for 127.0.0.1 that it signed."""
    folder = tmp_path_factory.mktemp("tls")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=TM2 test hospital CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
             "-subj", "/CN=127.0.0.1", cwd=folder)  # fmt: skip
    (folder / "server.ext").write_text(_SERVER_EXTENSIONS)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "server.pem", "-days", "2", "-extfile", "server.ext", cwd=folder)  # fmt: skip
    return {"ca": folder / "ca.pem", "certificate": folder / "server.pem", "key": folder / "server.key"}


@pytest.fixture
def https_server(private_ca) -> Iterator[SandboxServer]:
    with (
        open_sandbox(None) as sandbox,
        SandboxServer(sandbox, tls=(private_ca["certificate"], private_ca["key"])) as server,
    ):
        yield server


def _login(base_url: str, **options) -> OpenMRSClient:
    config = ClientConfig(base_url, SANDBOX_USERNAME, SANDBOX_PASSWORD, backoff_initial_s=0.01, **options)

    async def log_in() -> OpenMRSClient:
        async with OpenMRSClient(config) as client:
            await client.ensure_session()
            return client

    return asyncio.run(log_in())


def test_a_certificate_from_an_unknown_ca_stops_the_run_with_the_setting_to_use(https_server) -> None:
    with pytest.raises(OpenMRSConfigError) as caught:
        _login(https_server.base_url)
    message = str(caught.value)
    assert message.startswith("login: the TLS certificate of 127.0.0.1 is not accepted (")
    assert "set OPENMRS_CA_BUNDLE" in message
    assert caught.value.__cause__ is None


def test_a_certificate_for_another_host_name_says_so(https_server, private_ca) -> None:
    by_name = https_server.base_url.replace("127.0.0.1", "localhost")  # issued for 127.0.0.1 only
    with pytest.raises(OpenMRSConfigError) as caught:
        _login(by_name, ca_bundle=str(private_ca["ca"]))
    assert "use the host name the certificate was issued for in OPENMRS_BASE_URL" in str(caught.value)


def test_the_ca_bundle_is_trusted_besides_the_public_cas(https_server, private_ca) -> None:
    client = _login(https_server.base_url, ca_bundle=str(private_ca["ca"]))
    assert client.login_attempts == 1
    assert client.config.tls_verification().get_ca_certs()  # certifi's public CAs are still there


def test_a_ca_bundle_that_is_not_pem_is_a_configuration_error(tmp_path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    config = ClientConfig("https://emr.example.org/openmrs", "clerk", "pw", ca_bundle=str(bundle))
    with pytest.raises(OpenMRSConfigError, match=r"OPENMRS_CA_BUNDLE=.* cannot be read as PEM certificates"):
        config.tls_verification()
