"""JSON Schemas of corral's files, shipped as package data (``topology.schema.json``)."""
