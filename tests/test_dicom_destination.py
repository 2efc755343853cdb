"""DICOM destinations against real peers on loopback: Orthanc and DCMTK's storescp/dcmqrscp.

Observation tests use Orthanc: it indexes an instance before answering its C-STORE, while
dcmqrscp --fork may answer a C-FIND before another child's index update lands.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import timedelta
from pathlib import Path

import pydicom
import pytest
from certificates import Certificates, make_certificates
from cli_runs import run
from factories import expected
from faulty_pacs import AE_TITLE as FAULTY_AE_TITLE
from faulty_pacs import faulty_pacs
from pacs import dicom_destination
from peers import DicomPeer, free_port, orthanc_get, start_orthanc, start_storescp
from planned import plan_copies
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode, split_dataset

from reconciler.config.destinations import DestinationConfig
from reconciler.config.load import load_config
from reconciler.config.targets import RetrySettings
from reconciler.destinations.base import DestinationUnavailable
from reconciler.destinations.dicom.stream import WHOLE_FILE_LIMIT, _command_set, _data_set_offset
from reconciler.destinations.dicom.target import DicomDestination
from reconciler.engine.workspace import Workspace
from reconciler.model.plan import Action, InstanceRef
from reconciler.state.store import StateStore
from reconciler.transforms.compression import compress

# A peer that sends A-ASSOCIATE-RJ and closes at once is sometimes seen as an abort.
REFUSED = "rejected the association|did not accept an association"


def test_sent_studies_are_listed_instance_by_instance(
    orthanc_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = dicom_destination(orthanc_peer)
    for action in copy_actions:
        progress: list[int] = []
        result = destination.send(action, progress.append)
        assert result.failures == {}
        assert result.committed is not None and len(result.committed) == len(action.instances)
        assert sum(progress) == action.bytes
    held = destination.observe(expected(copy_actions))
    assert {uid: sorted(s.instances) for uid, s in held.items()} == {
        uid: sorted(sops) for uid, sops in expected(copy_actions).items()
    }


def test_partly_sent_study_shows_exactly_what_is_missing(
    orthanc_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = dicom_destination(orthanc_peer)
    action = copy_actions[0]
    destination.send(dataclasses.replace(action, instances=action.instances[:4]), lambda _: None)
    held = destination.observe(expected([action]))[action.study_uid]
    missing = {r.sop_uid for r in action.instances} - set(held.instances)
    assert missing == {r.sop_uid for r in action.instances[4:]}


def test_count_verification_uses_the_study_instance_count(
    orthanc_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = dicom_destination(orthanc_peer, verify="count")
    action = copy_actions[0]
    first = action.instances[:4]
    destination.send(dataclasses.replace(action, instances=first), lambda _: None)
    # 4 of 6: listed instance by instance, so that only the missing two go again.
    partly = destination.observe(expected([action]))
    assert set(partly[action.study_uid].instances) == {r.sop_uid for r in first}
    destination.send(action, lambda _: None)
    held = destination.observe(expected([action]))
    assert set(held[action.study_uid].instances) == set(expected([action])[action.study_uid])


def test_orthanc_receives_every_instance_unchanged(
    orthanc_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = dicom_destination(orthanc_peer)
    action = copy_actions[0]
    assert destination.send(action, lambda _: None).failures == {}
    instances = orthanc_get(orthanc_peer, "/instances?expand")
    by_uid = {i["MainDicomTags"]["SOPInstanceUID"]: i["ID"] for i in instances}
    assert set(by_uid) == {r.sop_uid for r in action.instances}
    ref = action.instances[0]
    url = f"{orthanc_peer.rest_url}/instances/{by_uid[ref.sop_uid]}/file"
    with urllib.request.urlopen(url) as response:
        stored = pydicom.dcmread(io.BytesIO(response.read()))
    # Orthanc writes its own file meta; the dataset itself must be exactly ours.
    original = pydicom.dcmread(ref.path)
    assert stored == original
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID


def test_peer_that_is_down_is_unavailable_and_sends_fail_after_retries(
    copy_actions: list[Action],
) -> None:
    down = DicomPeer("127.0.0.1", free_port(), "NOBODY", Path("/nonexistent"))
    destination = dicom_destination(down)
    with pytest.raises(DestinationUnavailable, match="did not accept an association"):
        destination.observe(expected(copy_actions))
    waits: list[float] = []
    destination.sleep = waits.append
    result = destination.send(copy_actions[0], lambda _: None)
    assert result.committed is None
    assert len(result.failures) == len(copy_actions[0].instances)
    assert waits == [0.0]  # two attempts, one pause between them


def test_rejected_association_names_the_cause(
    dcmqrscp_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    wrong = dataclasses.replace(dcmqrscp_peer, ae_title="NOT-THE-AET")
    with pytest.raises(DestinationUnavailable, match=REFUSED):
        dicom_destination(wrong).observe(expected(copy_actions))


def test_cli_backs_up_to_orthanc_and_converges(
    tmp_path: Path,
    small_studies: Path,
    orthanc_peer: DicomPeer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    config = tmp_path / "reconciler.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            site: pacs-backup
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              pacs:
                dicom:
                  host: 127.0.0.1
                  port: {orthanc_peer.port}
                  ae_title: {orthanc_peer.ae_title}
                verify: instances
            policies:
              - name: everything-to-pacs
                copy_to: [pacs]
            """
        )
    )
    code, out = run(capsys, "plan", "-c", str(config), "--detailed-exitcode")
    assert code == 2 and "Plan: 3 copies" in out
    code, out = run(capsys, "apply", "-c", str(config), "--auto-approve")
    assert code == 0, out
    code, out = run(capsys, "plan", "-c", str(config), "--refresh", "--detailed-exitcode")
    assert code == 0, out
    assert "No changes. 3 study copies in sync." in out


MR_ONLY_PROFILE = """\
[[TransferSyntaxes]]
[Uncompressed]
TransferSyntax1 = LocalEndianExplicit
TransferSyntax2 = LittleEndianImplicit
[[PresentationContexts]]
[MROnly]
PresentationContext1 = VerificationSOPClass\\Uncompressed
PresentationContext2 = MRImageStorage\\Uncompressed
[[Profiles]]
[MROnly]
PresentationContexts = MROnly
"""


def by_modality(actions: list[Action], modality: str) -> Action:
    return next(a for a in actions if a.study.modalities == modality)


def test_failure_status_fails_each_instance_with_the_peers_code(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    with start_storescp(tmp_path / "scp") as peer:
        shutil.rmtree(peer.storage)  # storescp can no longer write: "out of resources"
        result = dicom_destination(peer).send(copy_actions[0], lambda _: None)
    assert result.committed is None
    assert set(result.failures.values()) == {"the peer answered C-STORE with status 0xA700"}


def test_sop_class_the_peer_rejects_is_reported_not_sent(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    profile = tmp_path / "mr-only.cfg"
    profile.write_text(MR_ONLY_PROFILE)
    with start_storescp(tmp_path / "scp", extra_args=["-xf", str(profile), "MROnly"]) as peer:
        destination = dicom_destination(peer)
        ct = destination.send(by_modality(copy_actions, "CT"), lambda _: None)
        mr = destination.send(by_modality(copy_actions, "MR"), lambda _: None)
    assert ct.committed is None and ct.sent == 0, ct.failures
    assert all(
        "accepts SOP class 1.2.840.10008.5.1.4.1.1.2 in no transfer syntax" in why
        for why in ct.failures.values()
    )
    assert mr.failures == {} and mr.committed is not None


def test_peer_aborting_mid_study_is_retried_and_never_committed(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    with start_storescp(tmp_path / "scp", extra_args=["--abort-during"]) as peer:
        destination = dicom_destination(peer)
        destination.sleep = lambda _: None
        result = destination.send(copy_actions[0], lambda _: None)
    assert result.committed is None
    assert all("gave up after retries" in why for why in result.failures.values())


def test_slow_peer_times_out(tmp_path: Path, copy_actions: list[Action]) -> None:
    with start_storescp(tmp_path / "scp", extra_args=["--sleep-during", "5"]) as peer:
        destination = dicom_destination(peer)
        destination = DicomDestination(
            "pacs",
            destination.target.model_copy(update={"dimse_timeout": timedelta(seconds=1)}),
            destination.settings.model_copy(update={"retry": RetrySettings(attempts=1)}),
        )
        action = dataclasses.replace(copy_actions[0], instances=copy_actions[0].instances[:1])
        result = destination.send(action, lambda _: None)
    assert result.committed is None
    [why] = result.failures.values()
    assert "no response to C-STORE" in why


def test_peer_refusing_associations_is_unavailable(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    with (
        start_storescp(tmp_path / "scp", extra_args=["--refuse"]) as peer,
        pytest.raises(DestinationUnavailable, match=REFUSED),
    ):
        dicom_destination(peer).observe(expected(copy_actions))


def test_module_entry_point_backs_up_to_a_dicom_peer(
    tmp_path: Path, small_studies: Path, storescp_peer: DicomPeer
) -> None:
    """`python -m reconciler apply` with its sending worker processes, against storescp."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    (tmp_path / "reconciler.yaml").write_text(
        textwrap.dedent(
            f"""\
            site: module-entry
            sources:
              inbox: {{path: inbox, stable_after: 0s}}
            destinations:
              pacs:
                dicom:
                  host: {storescp_peer.host}
                  port: {storescp_peer.port}
                  ae_title: {storescp_peer.ae_title}
                  max_associations: 2
                verify: none
            policies:
              - {{name: all, copy_to: [pacs]}}
            """
        )
    )
    done = subprocess.run(
        [sys.executable, "-m", "reconciler", "apply", "-c", str(tmp_path), "--auto-approve"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(list(storescp_peer.storage.glob("*"))) == 18
    store = StateStore(tmp_path / ".reconciler" / "state.db")
    assert [run["command"] for run in store.recent_runs()] == ["apply"]
    store.close()


def tls_peer(
    tmp_path: Path, certs: Certificates, extra_args: Sequence[str] = ()
) -> AbstractContextManager[DicomPeer]:
    """storescp over TLS that requires a client certificate signed by our CA."""
    tls = ["+tls", str(certs.server_key), str(certs.server_cert), "-pw"]
    args = [*tls, "-rc", "+cf", str(certs.ca), *extra_args]
    return start_storescp(tmp_path / "scp", extra_args=args)


def test_mutual_tls_association_sends_the_study(tmp_path: Path, copy_actions: list[Action]) -> None:
    certs = make_certificates(tmp_path / "pki")
    tls = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}
    with tls_peer(tmp_path, certs) as peer:
        destination = dicom_destination(peer, tls=tls)
        result = destination.send(copy_actions[0], lambda _: None)
        destination.close()
        assert result.failures == {} and result.committed is not None
        assert len(list(peer.storage.glob("*"))) == len(copy_actions[0].instances)


def test_tls_peer_certificate_is_verified_by_default(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    certs = make_certificates(tmp_path / "pki")
    # Our client certificate is fine, but nothing tells us to trust the peer's CA.
    tls = {"cert": certs.client_cert, "key": certs.client_key}
    with tls_peer(tmp_path, certs) as peer:
        destination = dicom_destination(peer, tls=tls)
        destination.sleep = lambda _: None
        result = destination.send(copy_actions[0], lambda _: None)
        destination.close()
        assert result.committed is None
        assert all("TLS handshake failed" in why for why in result.failures.values())
        assert list(peer.storage.glob("*")) == []


def test_peer_verification_can_be_turned_off_explicitly(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    certs = make_certificates(tmp_path / "pki")
    tls = {"cert": certs.client_cert, "key": certs.client_key, "verify_peer": False}
    with tls_peer(tmp_path, certs) as peer:
        destination = dicom_destination(peer, tls=tls)
        result = destination.send(copy_actions[0], lambda _: None)
        destination.close()
    assert result.failures == {}


def test_certificate_paths_are_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "reconciler.yaml").write_text(
        textwrap.dedent(
            """\
            site: tls-site
            sources:
              inbox: {path: inbox}
            destinations:
              pacs:
                dicom:
                  host: pacs.example.org
                  port: 2762
                  ae_title: PACS
                  tls: {ca: pki/ca.crt, cert: pki/client.crt, key: pki/client.key}
            policies:
              - {name: all, copy_to: [pacs]}
            """
        )
    )
    with Workspace(load_config(tmp_path / "reconciler.yaml")) as workspace:
        destination = workspace.destination("pacs")
        assert isinstance(destination, DicomDestination)
        assert destination.target.tls is not None
        assert destination.target.tls.ca == tmp_path / "pki" / "ca.crt"
        assert destination.target.tls.key == tmp_path / "pki" / "client.key"


IMPLICIT_ONLY_PROFILE = """\
[[TransferSyntaxes]]
[ImplicitOnly]
TransferSyntax1 = LittleEndianImplicit
[[PresentationContexts]]
[ImplicitOnly]
PresentationContext1 = VerificationSOPClass\\ImplicitOnly
PresentationContext2 = CTImageStorage\\ImplicitOnly
[[Profiles]]
[ImplicitOnly]
PresentationContexts = ImplicitOnly
"""


def test_peer_accepting_only_implicit_vr_gets_the_same_dataset_re_encoded(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    profile = tmp_path / "implicit-only.cfg"
    profile.write_text(IMPLICIT_ONLY_PROFILE)
    ct = by_modality(copy_actions, "CT")
    args = ["-xf", str(profile), "ImplicitOnly"]
    with start_storescp(tmp_path / "scp", extra_args=args) as peer:
        result = dicom_destination(peer).send(ct, lambda _: None)
        stored = sorted(peer.storage.glob("*"))
    assert result.failures == {} and result.committed is not None
    assert len(stored) == len(ct.instances)
    received = pydicom.dcmread(stored[0])
    original = pydicom.dcmread(
        next(r.path for r in ct.instances if r.sop_uid == received.SOPInstanceUID)
    )
    assert received.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
    assert received.PixelData == original.PixelData
    assert received == original


def test_a_compressed_file_is_decoded_for_a_peer_accepting_only_uncompressed_syntaxes(
    tmp_path: Path, small_studies: Path
) -> None:
    inbox = tmp_path / "inbox"
    shutil.copytree(small_studies, inbox)
    originals = {}
    for path in inbox.rglob("*.dcm"):
        if pydicom.dcmread(path, stop_before_pixels=True).Modality == "CT":
            original = pydicom.dcmread(path)
            originals[original.SOPInstanceUID] = original
            path.write_bytes(compress(path.read_bytes(), "jpeg2000-lossless").data)
    ct = by_modality(plan_copies(tmp_path, inbox), "CT")
    assert {r.transfer_syntax for r in ct.instances} == {pydicom.uid.JPEG2000Lossless}
    profile = tmp_path / "implicit-only.cfg"
    profile.write_text(IMPLICIT_ONLY_PROFILE)
    with start_storescp(tmp_path / "scp", extra_args=["-xf", str(profile), "ImplicitOnly"]) as peer:
        result = dicom_destination(peer).send(ct, lambda _: None)
        received = [pydicom.dcmread(p) for p in sorted(peer.storage.glob("*"))]
    assert result.failures == {} and len(received) == len(ct.instances) == len(originals)
    for ds in received:
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian
        assert ds == originals[ds.SOPInstanceUID]  # attributes and native pixels, exactly


def test_storage_commitment_confirms_a_copy_and_refuses_what_the_peer_lacks(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    port = free_port()
    with start_orthanc(tmp_path / "orthanc", calling_port=port, stop_grace=0.5) as peer:
        destination = dicom_destination(
            peer,
            dicom={"commitment_port": port, "commitment_timeout": "20s"},
            verify="commitment",
        )
        sent = destination.send(copy_actions[0], lambda _: None)
        never_sent = destination.verify(copy_actions[1], lambda _: None)
        again = destination.verify(copy_actions[0], lambda _: None)
        destination.close()
    assert sent.failures == {} and sent.committed is not None
    assert again.corrupt == {}
    assert set(never_sent.corrupt) == {r.sop_uid for r in copy_actions[1].instances}
    assert all("did not commit it (failure reason 0x" in why for why in never_sent.corrupt.values())


def test_commitment_needs_a_port_for_the_reports() -> None:
    with pytest.raises(ValueError, match="commitment_port"):
        DestinationConfig.model_validate(
            {"dicom": {"host": "h", "port": 104, "ae_title": "PACS"}, "verify": "commitment"}
        )


def test_cli_records_storage_commitment_in_the_state(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(small_studies, tmp_path / "inbox")
    port = free_port()
    with start_orthanc(tmp_path / "orthanc", calling_port=port, stop_grace=0.5) as peer:
        (tmp_path / "reconciler.yaml").write_text(
            textwrap.dedent(
                f"""\
                site: committed
                sources:
                  inbox: {{path: inbox, stable_after: 0s}}
                destinations:
                  pacs:
                    dicom:
                      host: {peer.host}
                      port: {peer.port}
                      ae_title: {peer.ae_title}
                      commitment_port: {port}
                    verify: commitment
                policies:
                  - {{name: all, copy_to: [pacs]}}
                """
            )
        )
        config = str(tmp_path / "reconciler.yaml")
        code, out = run(capsys, "apply", "-c", config, "--auto-approve")
        assert code == 0, out
        code, out = run(capsys, "plan", "-c", config, "--refresh", "--detailed-exitcode")
        assert code == 0, out
    store = StateStore(tmp_path / ".reconciler" / "state.db")
    observation = store.load_observation("pacs")
    store.close()
    assert observation is not None and len(observation.studies) == 3
    assert all(s.verified_at is not None for s in observation.studies.values())


def test_each_c_store_carries_its_own_message_id(
    storescp_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    destination = dicom_destination(storescp_peer, dicom={"max_associations": 1})
    assert destination.send(copy_actions[0], lambda _: None).failures == {}
    destination.close()
    log = (storescp_peer.storage.parent / "storescp.log").read_text(errors="replace")
    ids = re.findall(r"Received Store Request \(MsgID (\d+)", log)
    assert len(ids) == len(copy_actions[0].instances) == len(set(ids))


def enlarged(tmp_path: Path, like: InstanceRef, pixel_bytes: int) -> InstanceRef:
    """A new instance like ``like`` with ``pixel_bytes`` of random pixel data (any misplaced
    fragment shows), listed as the scan would list it."""
    ds = pydicom.dcmread(like.path)
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    ds.Columns = 1024
    ds.Rows = pixel_bytes // (ds.Columns * ds.BitsAllocated // 8)
    ds.PixelData = os.urandom(pixel_bytes)
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    return like._replace(
        sop_uid=ds.SOPInstanceUID,
        path=str(path),
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def with_large_instances(tmp_path: Path, action: Action) -> Action:
    """``action`` plus an instance streamed in blocks (past WHOLE_FILE_LIMIT) and one read
    whole, each many PDUs long."""
    like = action.instances[0]
    streamed = enlarged(tmp_path, like, WHOLE_FILE_LIMIT + 3 * 2**20)
    whole = enlarged(tmp_path, like, 2**20)
    return dataclasses.replace(action, instances=(streamed, whole, *action.instances))


def data_set_bytes(path: str | Path) -> bytes:
    """What follows the file meta: what a C-STORE carries."""
    return Path(path).read_bytes()[split_dataset(Path(path))[1] :]


def assert_received_unchanged(storage: Path, action: Action) -> None:
    received = {
        pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p for p in storage.iterdir()
    }
    assert set(received) == {r.sop_uid for r in action.instances}
    for ref in action.instances:
        assert data_set_bytes(received[ref.sop_uid]) == data_set_bytes(ref.path)


@pytest.mark.parametrize("peer", ["storescp", "storescp --max-pdu 4096", "storescp over TLS"])
def test_large_instances_arrive_byte_for_byte(
    tmp_path: Path, copy_actions: list[Action], peer: str
) -> None:
    action = with_large_instances(tmp_path, copy_actions[0])
    tls = None
    bit_preserving = ["+B"]  # storescp writes the data set exactly as it came
    if peer.endswith("TLS"):
        certs = make_certificates(tmp_path / "pki")
        tls = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}
        started = tls_peer(tmp_path, certs, bit_preserving)
    else:
        started = start_storescp(tmp_path / "scp", extra_args=[*bit_preserving, *peer.split()[1:]])
    with started as scp:
        destination = dicom_destination(scp, tls=tls)
        result = destination.send(action, lambda _: None)
        destination.close()
    assert result.failures == {} and result.sent == len(action.instances)
    assert_received_unchanged(scp.storage, action)


def test_orthanc_stores_large_instances_byte_for_byte(
    tmp_path: Path, orthanc_peer: DicomPeer, copy_actions: list[Action]
) -> None:
    action = with_large_instances(tmp_path, copy_actions[0])
    destination = dicom_destination(orthanc_peer)
    assert destination.send(action, lambda _: None).failures == {}
    destination.close()
    ids = {
        i["MainDicomTags"]["SOPInstanceUID"]: i["ID"]
        for i in orthanc_get(orthanc_peer, "/instances?expand")
    }
    for ref in action.instances[:2]:
        url = f"{orthanc_peer.rest_url}/instances/{ids[ref.sop_uid]}/file"
        with urllib.request.urlopen(url) as response:
            (tmp_path / "stored.dcm").write_bytes(response.read())
        assert data_set_bytes(tmp_path / "stored.dcm") == data_set_bytes(ref.path)


def test_files_changed_since_the_scan_fail_alone_on_an_association_that_goes_on(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    action = with_large_instances(tmp_path, copy_actions[0])
    streamed, whole, *others = action.instances
    for ref in (streamed, whole):  # same size, other bytes: only the hash tells
        Path(ref.path).write_bytes(Path(ref.path).read_bytes()[:-1] + b"\x01")
    port = free_port()
    with faulty_pacs(port) as pacs:
        peer = DicomPeer("127.0.0.1", port, FAULTY_AE_TITLE, tmp_path)
        destination = dicom_destination(peer, dicom={"max_associations": 1})
        result = destination.send(action, lambda _: None)
        destination.close()
    assert set(result.failures) == {streamed.sop_uid, whole.sop_uid}
    assert all("changed since it was scanned" in why for why in result.failures.values())
    assert set(pacs.received) == {r.sop_uid for r in others}
    assert pacs.requested == 1


@pytest.mark.parametrize("ending", ["the peer aborts it", "it idles past network_timeout"])
def test_an_idle_association_that_ended_is_replaced_not_failed(
    copy_actions: list[Action], ending: str
) -> None:
    port = free_port()
    with faulty_pacs(port) as pacs:
        peer = DicomPeer("127.0.0.1", port, FAULTY_AE_TITLE, Path())
        dicom = {"max_associations": 1, "network_timeout": "1s"}
        destination = dicom_destination(peer, dicom=dicom, retry={"attempts": 1})
        assert destination.send(copy_actions[0], lambda _: None).failures == {}
        if ending == "the peer aborts it":
            pacs.abort_associations()
        else:
            time.sleep(1.2)
        result = destination.send(copy_actions[1], lambda _: None)
        destination.close()
    assert result.failures == {} and pacs.requested == 2
    assert set(pacs.received) == {r.sop_uid for a in copy_actions[:2] for r in a.instances}


def test_c_store_command_set_is_the_one_pynetdicom_encodes(copy_actions: list[Action]) -> None:
    ref = copy_actions[0].instances[0]
    request = C_STORE()
    request.MessageID = 513
    request.AffectedSOPClassUID = ref.sop_class_uid
    request.AffectedSOPInstanceUID = ref.sop_uid
    request.Priority = 2
    request.DataSet = io.BytesIO(b"a data set follows")
    message = C_STORE_RQ()
    message.primitive_to_message(request)
    assert _command_set(ref, 513) == encode(message.command_set, True, True)


def test_data_set_offset_walks_the_file_meta_or_leaves_odd_headers_to_pydicom(
    tmp_path: Path, copy_actions: list[Action]
) -> None:
    ref = copy_actions[0].instances[0]
    data = Path(ref.path).read_bytes()
    assert _data_set_offset(io.BytesIO(data), ref) == split_dataset(Path(ref.path))[1]
    # File meta written implicit VR, against PS3.10: pydicom reads it, and so must we.
    meta = pydicom.dcmread(ref.path, stop_before_pixels=True).file_meta
    implicit_meta = pydicom.filebase.DicomBytesIO()
    implicit_meta.is_little_endian, implicit_meta.is_implicit_VR = True, True
    pydicom.filewriter.write_dataset(implicit_meta, meta)
    odd = tmp_path / "odd.dcm"
    odd.write_bytes(data[:132] + implicit_meta.getvalue() + data_set_bytes(ref.path))
    with pytest.warns(UserWarning, match="implicit VR"):
        offset = _data_set_offset(io.BytesIO(odd.read_bytes()), ref._replace(path=str(odd)))
    assert offset == 132 + len(implicit_meta.getvalue())
