import sys

from reconciler.cli.main import main

# Guarded: worker processes (spawned for transforms) import the parent's __main__ module.
if __name__ == "__main__":
    sys.exit(main())
