"""Conformance results for people: the requirements catalogue, redaction of what tests record, and the
standalone conformance report (HTML and Markdown) built from test results and traces.

Pure readers and writers of files: nothing here starts a process or talks to a cluster, so the report
of a failed run is written from whatever that run left behind.
"""
