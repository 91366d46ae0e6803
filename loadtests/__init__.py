"""locust load runs (run in their own processes by `corral load run`; they import only corral.model)."""
