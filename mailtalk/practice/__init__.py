"""``mailtalk practice``: the course's mail world on one machine, with lessons.

``world.toml`` (the world as data) read by ``spec.py``; ``layout.py`` chooses its
addresses and ports; ``world.py`` starts it; ``worldmap.py`` is its map
(ROOT/world.json and the text printed before the prompt); ``command.py`` is the
command (start, ``--keep``, ``--status``, ``--stop``, ``--reset``).
"""
