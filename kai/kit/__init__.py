"""Small helpers every part may use: nothing here imports a part of kai."""
