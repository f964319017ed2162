"""The logic and figures of single chapters of the book, one module per chapter or part; the
notebooks call them. Each ``*_plots`` module draws what its chapter module computes."""
