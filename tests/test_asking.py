"""A peer asked study by study (C-FIND, QIDO-RS) is asked only the studies due: those never
asked, and a share of those answered longest ago, so that every study is asked again within
refresh_after at the pace observations come, and never the whole archive at every plan."""

from __future__ import annotations

import json
import shutil
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from cli_runs import run
from factories import NOW, instance
from hypothesis import given, settings
from hypothesis import strategies as st
from pacs_sites import pacs_config
from peers import start_orthanc

from reconciler.config.load import load_config
from reconciler.engine.workspace import Workspace
from reconciler.model.observation import Observation, ObservedInstance, ObservedStudy
from reconciler.state.store import StateStore

HOUR = timedelta(hours=1)
STUDIES = [f"1.2.{n}" for n in range(8)]


def catalogue(store: StateStore, studies: list[str]) -> None:
    store.record_scan([instance(uid, f"{uid}.1") for uid in studies], [], [])


def observe(store: StateStore, asked: list[str], held: list[str], at: datetime) -> None:
    """An observation of "pacs" at ``at`` that asked ``asked`` and found ``held``."""
    copies = [ObservedStudy(uid, {f"{uid}.1": ObservedInstance(None, 100)}) for uid in held]
    store.save_copies("pacs", at, copies)
    store.finish_observation(Observation("pacs", at, 0, ok=True), True, asked)


def asked_at(store: StateStore) -> dict[str, float]:
    db = store._db
    return dict(db.execute("SELECT study_uid, asked_at FROM asked_studies"))


def test_the_first_observation_asks_every_study_the_state_holds(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        catalogue(store, STUDIES[:3])
        store.record_study_stored("pacs", "9.9", {"9.9.1": ObservedInstance(None, 1)})
        assert store.studies_to_ask("pacs", NOW, HOUR, None) == [*STUDIES[:3], "9.9"]
    finally:
        store.close()


def test_later_observations_ask_the_never_asked_and_a_share_of_the_oldest(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        catalogue(store, STUDIES)
        observe(store, STUDIES, STUDIES, NOW)
        assert store.studies_to_ask("pacs", NOW, HOUR, NOW) == []
        catalogue(store, ["1.3.0"])  # arrived since: asked at the next observation
        quarter = NOW + HOUR / 4
        assert store.studies_to_ask("pacs", quarter, HOUR, NOW) == [*STUDIES[:2], "1.3.0"]
        observe(store, ["1.3.0", *STUDIES[:2]], STUDIES[:2], quarter)
        # Every study answered over refresh_after ago is due, whatever the share.
        later, just_before = NOW + HOUR + timedelta(seconds=2), NOW + HOUR + timedelta(seconds=1)
        assert store.studies_to_ask("pacs", later, HOUR, just_before) == STUDIES[2:]
    finally:
        store.close()


def test_an_observation_that_asked_some_studies_forgets_only_their_copies_not_found(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path / "state.db")
    try:
        catalogue(store, STUDIES[:4])
        observe(store, STUDIES[:4], STUDIES[:4], NOW)
        observe(store, STUDIES[:2], [STUDIES[1]], NOW + HOUR)  # 1.2.0 is gone there
        held = store.load_observation("pacs")
        assert held is not None and sorted(held.studies) == STUDIES[1:4]
        store.forget_files(STUDIES[3], [f"/srv/inbox/{STUDIES[3]}/{STUDIES[3]}.1.dcm"])
        # A study neither catalogued nor held there any more is not asked about again.
        observe(store, [STUDIES[3]], [], NOW + 2 * HOUR)
        assert STUDIES[3] not in asked_at(store)
    finally:
        store.close()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 40),  # studies
    st.lists(st.integers(1, 30), min_size=5, max_size=40),  # minutes between observations
)
def test_every_study_is_asked_again_within_refresh_after(studies: int, gaps: list[int]) -> None:
    with StateStoreIn() as store:
        uids = [f"1.4.{n}" for n in range(studies)]
        catalogue(store, uids)
        at = NOW
        observe(store, store.studies_to_ask("pacs", at, HOUR, None), [], at)
        for minutes in gaps:
            since, at = at, at + timedelta(minutes=minutes)
            due = store.studies_to_ask("pacs", at, HOUR, since)
            assert len(due) <= studies * minutes // 60 + 1 + sum(
                1 for t in asked_at(store).values() if t < (at - HOUR).timestamp()
            )
            observe(store, due, [], at)
            oldest = min(asked_at(store).values())
            assert at.timestamp() - oldest <= HOUR.total_seconds(), due


class StateStoreIn:
    """A state in a temporary folder, for hypothesis examples."""

    def __enter__(self) -> StateStore:
        import tempfile

        self._folder = tempfile.TemporaryDirectory()
        self._store = StateStore(Path(self._folder.name) / "state.db")
        return self._store

    def __exit__(self, *_: object) -> None:
        self._store.close()
        self._folder.cleanup()


def test_a_pacs_is_asked_a_share_of_its_studies_at_each_observation(
    tmp_path: Path, small_studies: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a real Orthanc: a study deleted there is found gone once its turn comes, and
    each observation before asks only its share."""
    shutil.copytree(small_studies, tmp_path / "inbox")
    with start_orthanc(tmp_path / "orthanc", stop_grace=0.5) as peer:
        config = pacs_config(tmp_path, peer, "instances")
        document = json.loads(Path(config).read_text())
        document["destinations"]["pacs"]["refresh_after"] = "1h"
        Path(config).write_text(json.dumps(document))
        assert run(capsys, "apply", "-c", config, "--auto-approve")[0] == 0
        with Workspace(load_config(config)) as workspace:
            first = workspace.observe(refresh=True, now=NOW)["pacs"]
            assert first.ok
            studies = sorted(workspace.store.cached_copies("pacs"))
            assert len(studies) == 3
            victim = studies[0]  # the first asked again: answered as long ago as any, by UID
            [orthanc_id] = _orthanc_study(peer.rest_url, victim)
            request = urllib.request.Request(
                f"{peer.rest_url}/studies/{orthanc_id}", method="DELETE"
            )
            urllib.request.urlopen(request, timeout=10).close()
            soon = NOW + timedelta(minutes=10)  # within 15 minutes: the cache answers
            assert workspace.observe(refresh=False, now=soon)["pacs"] == first
            share = NOW + timedelta(minutes=20)  # a third of refresh_after: one study
            workspace.observe(refresh=False, now=share)
            assert {u: t for u, t in asked_at(workspace.store).items() if t > NOW.timestamp()} == {
                victim: share.timestamp()
            }
            assert sorted(workspace.store.cached_copies("pacs")) == studies[1:]


def _orthanc_study(rest_url: str, study_uid: str) -> list[str]:
    """Orthanc's identifiers of the study with this Study Instance UID."""
    request = urllib.request.Request(f"{rest_url}/tools/lookup", data=study_uid.encode())
    with urllib.request.urlopen(request, timeout=10) as response:
        return [found["ID"] for found in json.load(response) if found["Type"] == "Study"]
