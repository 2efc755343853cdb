"""dicom-reconciler: declarative, plan-then-apply backup and lifecycle for DICOM studies."""

__version__ = "0.1.0"
