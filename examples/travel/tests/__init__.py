"""The travel planner's tests (pytest, against a real Temporal dev server)."""
