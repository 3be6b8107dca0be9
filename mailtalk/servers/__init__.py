"""Embedded reference servers for ``mailtalk serve --root ROOT``.

Real clients talk to them; qmail-style control files under ``ROOT/control/`` decide whom
they accept mail for and whom they relay for (see :mod:`mailtalk.servers.policy`).
"""
