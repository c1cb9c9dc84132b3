"""Task executors: approval, evaluation, get-action and jobs, each answering `.triggered` events.

Glue between the pure core and the adapters; may import everything below `ingress`.
"""
