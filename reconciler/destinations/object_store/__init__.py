"""Object destinations (folders and S3): one object per instance, a manifest per study
written last, archive bundles, pruning, and how stored objects are read back."""
