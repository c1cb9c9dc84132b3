"""The controller: the loops that move events through the named steps, and their wiring.

observe → admit → record (the source side: upstream polls and the ways in) and
observe → fold → plan → record → dispatch → collect (the engine side), over an
immutable config snapshot; see docs/architecture.md for the picture.
"""
