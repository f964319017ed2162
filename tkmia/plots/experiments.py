"""Figures of the book (see tkmia.plots)."""

__all__: list[str] = []
