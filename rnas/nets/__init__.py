"""Searched networks after the search: their architecture and tutors as arch.json (derivation.py), as a graph
(graph.py), and scaled to a budget (scaling.py, RobustScaling)."""
