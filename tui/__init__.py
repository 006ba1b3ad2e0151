"""Runyard's terminal UI: a Textual client of the engine daemon."""
