"""Native pieces every pillar shares: XXH3-64 hashing of keys (``xxh3``), and
the Cython helpers for key and array arguments (``keys.pxd``, ``arrays.pxd``)."""
