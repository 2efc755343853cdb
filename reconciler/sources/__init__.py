"""Sources: scanning folders of DICOM files into the catalog, checking their structure."""
