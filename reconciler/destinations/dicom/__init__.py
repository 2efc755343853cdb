"""DICOM destinations: C-STORE, C-FIND, storage commitment and C-MOVE/C-GET retrieval."""
