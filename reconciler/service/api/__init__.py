"""The integration API: study lookups, a reconcile trigger and restores, over HTTP (JSON and
XML-RPC) for RIS and other scripts; served by `reconciler watch` and `reconciler serve`."""
