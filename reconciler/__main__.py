import sys

from reconciler.cli import main

# Guarded: worker processes (spawned for DICOM sends) import the parent's __main__ module.
if __name__ == "__main__":
    sys.exit(main())
