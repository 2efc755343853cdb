"""Transforms benchmark: ratio and time per image of each codec, serial and in worker processes,
on generated 512x512 16-bit CT images; encryption and de-identification throughput.

Run by users, not by the tests:  .venv/bin/python bench/transforms.py [--images 40]
Times include what a real copy pays: parsing, encoding, and decoding again for the lossless check.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from reconciler.demo.synth import generate
from reconciler.transforms.anonymization_check import check_anonymized
from reconciler.transforms.anonymize import anonymize
from reconciler.transforms.compression import compress
from reconciler.transforms.encryption import decrypt, encrypt
from reconciler.transforms.master_keys import Keyring, MasterKey
from reconciler.transforms.pool import CompressionPool
from reconciler.transforms.presets import load_preset
from reconciler.transforms.settings import Codec

CODECS: tuple[Codec, ...] = ("jpeg2000-lossless", "rle-lossless", "jpeg-ls-lossless", "deflated")


def ct_images(folder: Path, count: int) -> list[bytes]:
    # One series per study keeps the images contiguous slices, as a real CT series is.
    (study,) = generate(
        folder,
        studies=1,
        series_per_study=1,
        instances_per_series=count,
        matrix=512,
        modalities=["CT"],
    )
    return [path.read_bytes() for path in study.files]


def serial(images: list[bytes], codec: Codec) -> tuple[float, float]:
    """(ms per image, compression ratio)."""
    start = time.perf_counter()
    stored = sum(len(compress(data, codec).data) for data in images)
    elapsed = time.perf_counter() - start
    return 1000 * elapsed / len(images), sum(map(len, images)) / stored


def parallel(images: list[bytes], codec: Codec, workers: int) -> float:
    """Wall-clock ms per image with ``workers`` processes, their start-up excluded."""
    with CompressionPool(workers) as pool:
        # Warm every worker up (spawn, imports) so only the steady state is timed.
        for future in [pool.submit(images[0], codec) for _ in range(workers)]:
            future.result()
        start = time.perf_counter()
        for future in [pool.submit(data, codec) for data in images]:
            future.result()
        return 1000 * (time.perf_counter() - start) / len(images)


def encryption_rates(images: list[bytes], rounds: int = 5) -> tuple[float, float]:
    """(encrypt MB/s, decrypt MB/s) over the images, one object each."""
    keyring = Keyring(MasterKey.generate())
    total = rounds * sum(map(len, images))
    start = time.perf_counter()
    sealed = []
    for _ in range(rounds):
        sealed = [encrypt(data, keyring, str(i).encode()) for i, data in enumerate(images)]
    encrypting = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(rounds):
        for i, blob in enumerate(sealed):
            decrypt(blob, keyring, str(i).encode())
    decrypting = time.perf_counter() - start
    return total / encrypting / 1e6, total / decrypting / 1e6


def anonymization_ms(images: list[bytes], preset: str = "teaching-file") -> tuple[float, float]:
    """(ms per image de-identified, ms per image checked), one core."""
    profile = load_preset(preset)
    secret = b"bench-secret-0123456789"
    start = time.perf_counter()
    results = [anonymize(data, profile, secret).data for data in images]
    anonymizing = time.perf_counter() - start
    start = time.perf_counter()
    for data in results:
        check_anonymized(data, profile)
    checking = time.perf_counter() - start
    return 1000 * anonymizing / len(images), 1000 * checking / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        images = ct_images(Path(folder), args.images)
    size = sum(map(len, images)) / len(images)
    print(f"{len(images)} CT images 512x512 16-bit, {size / 1e3:.0f} kB each")
    print(f"{'codec':<20}{'ratio':>7}{'serial ms/img':>15}{f'{args.workers} procs ms/img':>17}")
    for codec in CODECS:
        per_image, ratio = serial(images, codec)
        in_pool = parallel(images, codec, args.workers)
        print(f"{codec:<20}{ratio:>6.2f}:1{per_image:>15.1f}{in_pool:>17.1f}")
    encrypting, decrypting = encryption_rates(images)
    print(f"AES-256-GCM: encrypt {encrypting:.0f} MB/s, decrypt {decrypting:.0f} MB/s (one core)")
    anonymizing, checking = anonymization_ms(images)
    print(
        f"PS3.15 teaching-file profile: de-identify {anonymizing:.1f} ms/img, "
        f"check {checking:.1f} ms/img (one core)"
    )


if __name__ == "__main__":
    main()
