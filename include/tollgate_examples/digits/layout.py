"""The shape of a digit scan: plain constants, imported by the pyfunc without the rest of Tollgate."""

SIDE = 8
PIXELS = tuple(f"px_{row}{col}" for row in range(SIDE) for col in range(SIDE))
MAX_GREY = 16  # scikit-learn's digits have 17 grey levels, 0..16
CLASSES = tuple(range(10))
