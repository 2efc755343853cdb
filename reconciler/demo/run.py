"""`reconciler demo`: generate sample studies, then plan, apply and re-plan a folder backup."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib.resources import files
from pathlib import Path

from reconciler.demo.synth import generate

DEMO_CONFIG = "demo.yaml"


def run_demo(folder: Path, studies: int, cli: Callable[[Sequence[str]], int]) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "reconciler.yaml"
    if not config.exists():
        config.write_text(files("reconciler.demo").joinpath(DEMO_CONFIG).read_text())
    incoming = folder / "incoming"
    if not incoming.exists():
        generated = generate(incoming, studies=studies, series_per_study=3, instances_per_series=10)
        print(f"Generated {len(generated)} synthetic studies in {incoming}.")
    steps = [
        ("What would change:", ["plan", "-c", str(config)]),
        ("Applying:", ["apply", "-c", str(config), "--auto-approve"]),
        ("Planning again: nothing should be left to do.", ["plan", "-c", str(config)]),
    ]
    for title, argv in steps:
        print(f"\n=== {title} (reconciler {' '.join(argv)})\n", flush=True)
        code = cli(argv)
        if code != 0:
            return code
    print(f"\nThe backup is in {folder / 'backup'}; the state is in {folder / '.reconciler'}.")
    return 0
