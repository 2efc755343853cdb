"""The storage commitment listener accepts reports only where the peer reaches us: it binds
the loopback address for a peer on loopback, a configured address otherwise, never every
interface."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from peers import free_port

from reconciler.config.destinations import DestinationConfig
from reconciler.config.load import load_config
from reconciler.config.problems import ConfigError
from reconciler.destinations.dicom.target import DicomDestination


def config_text(host: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""\
        site: listener
        sources:
          inbox: {{path: inbox}}
        destinations:
          pacs:
            dicom: {{host: "{host}", port: 104, ae_title: PACS, commitment_port: 11113{extra}}}
            verify: commitment
        policies:
          - {{name: all, copy_to: [pacs]}}
        """
    )


def test_a_peer_elsewhere_needs_the_address_the_listener_binds(tmp_path: Path) -> None:
    path = tmp_path / "reconciler.yaml"
    path.write_text(config_text("pacs.example.org"))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "reconciler.yaml:6" in message and "commitment_address" in message, message

    path.write_text(config_text("pacs.example.org", ", commitment_address: 10.0.0.5"))
    target = load_config(path).config.destinations["pacs"].dicom
    assert target is not None and target.listener_address == "10.0.0.5"


@pytest.mark.parametrize(
    ("host", "bound"), [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1")]
)
def test_the_listener_of_a_peer_on_loopback_binds_only_loopback(
    tmp_path: Path, host: str, bound: str
) -> None:
    port = free_port()
    path = tmp_path / "reconciler.yaml"
    path.write_text(config_text(host).replace("11113", str(port)))
    settings: DestinationConfig = load_config(path).config.destinations["pacs"]
    assert settings.dicom is not None
    destination = DicomDestination("pacs", settings.dicom, settings)
    try:
        listener = destination._commitment_listener()  # started on the first request
        assert listener.address == (bound, port)
    finally:
        destination.close()
