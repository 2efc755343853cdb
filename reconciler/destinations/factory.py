"""Open the destination a config names, with its file paths made relative to the config."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from reconciler.config.destinations import DestinationConfig
from reconciler.config.targets import DicomTarget, DicomWebTarget, ObjectTarget
from reconciler.destinations.base import Destination
from reconciler.destinations.filesystems import folder_of

Resolve = Callable[[Path], Path]


def open_destination(
    name: str, settings: DestinationConfig, site: str, resolve: Resolve
) -> Destination:
    destination = _open_kind(name, settings, site, resolve)
    # Object stores compress on their own: their manifests record it.
    compression = "keep" if settings.object is not None else settings.compression
    if settings.anonymize is None and compression == "keep":
        return destination
    from reconciler.destinations.staging import StagingDestination

    return StagingDestination(destination, settings.anonymize, compression)


def _open_kind(name: str, settings: DestinationConfig, site: str, resolve: Resolve) -> Destination:
    # Each kind's module is imported when one is opened: a plan that reads only cached
    # observations starts without pynetdicom, requests or s3fs.
    if settings.dicom is not None:
        from reconciler.destinations.dicom.target import DicomDestination

        return DicomDestination(name, _dicom(settings.dicom, resolve), settings)
    if settings.dicomweb is not None:
        from reconciler.destinations.dicomweb import DicomWebDestination

        return DicomWebDestination(name, _dicomweb(settings.dicomweb, resolve), settings)
    assert settings.object is not None  # the model requires exactly one kind
    from reconciler.destinations.object_store.store import ObjectStoreDestination

    return ObjectStoreDestination(name, _object(settings.object, resolve), settings, site)


def _dicom(target: DicomTarget, resolve: Resolve) -> DicomTarget:
    if target.tls is None:
        return target
    return target.model_copy(update={"tls": target.tls.resolved(resolve)})


def _dicomweb(target: DicomWebTarget, resolve: Resolve) -> DicomWebTarget:
    if target.ca is None:
        return target
    return target.model_copy(update={"ca": resolve(target.ca)})


def _object(target: ObjectTarget, resolve: Resolve) -> ObjectTarget:
    folder = folder_of(target.url, resolve)
    if folder is None:
        return target
    # Not as_uri(): fsspec does not unquote it, so a space would become "%20" in the path.
    return target.model_copy(update={"url": f"file://{folder}"})
