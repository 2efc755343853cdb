"""Running a plan: the workspace that ties config, state and destinations together, apply
and its events, local trash and shares."""
