"""Background removal (matting): backends behind one small interface, and mask statistics.

rembg's session layout is the model: one class per method (`backends.py`), created by a
factory from params, cached once per worker process; `stats.py` measures each mask so the
quality checks about foreground/background separation can judge it.
"""
