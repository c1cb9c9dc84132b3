"""Typed models of every upstream file and every event: the single source of truth for formats.

Go's own grammars live here too, because Keptn users' files are written in them:
`gotime` (durations, RFC 3339), `goregex` (regular expressions, via re2),
`gotemplate` (text/template, for webhook.yaml), and `trailers` (git commit trailers).
What this layer may import is its row in the layer table (docs/architecture.md).
"""
