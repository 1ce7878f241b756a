"""Examples that ship with kai and run against any hub."""
