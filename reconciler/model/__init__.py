"""Plain data the layers pass on: the catalog, observations of destinations, plans."""
