"""Running a scenario's reference topology on this machine: ``corral up``, ``corral down``, topology.json."""
