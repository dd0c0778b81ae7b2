"""FITS in and out: :mod:`.reading` finds and reads the science images of a file, :mod:`.writing` writes
outputs (a byte copy of the input plus crdetect's extensions) atomically."""
