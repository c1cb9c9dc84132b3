"""Pure decisions over typed models and events: no I/O, no clock, no randomness.

May import: stdlib and `reconciler.formats`. Time is always an argument.
"""
