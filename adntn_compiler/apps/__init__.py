"""Applications on top of the compiler: bundled model definitions, the CRAFT text detector, the demo."""
