"""Programs the verifier tests share (see table.py)."""
