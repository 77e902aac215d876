"""The shared datasets: where they are, and how images, masks and sequences are read and made."""
