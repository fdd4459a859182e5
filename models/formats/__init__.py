"""Formats of user-supplied models (``imagine-edge models add``); see :mod:`.base`."""
