"""Routers driven for canaries at the traffic level (nginx first), behind a Protocol.

It uses the core and the release logic only; the service layer decides when
to change weights, this says how a router is told.
"""
