"""Running it for real: Lease leadership, probes and shutdown (`lifecycle`), the health
board, the data-directory lock, `/metrics`, logging, the status views and the toolchain
checks, and the notifier that sends delivery news after the ledger (`notifier`). What the loops and the ways in use to run as a service; none of it decides
anything about a delivery.
"""
