"""`reconciler demo` and the synthetic studies it (and the tests) generate."""
