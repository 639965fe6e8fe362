"""Making a compressed model good: `compress` a torch model, train and distill it (`train`), measure each layer's
`sensitivity`, save and load it (`modelio`). Imported by name; every module here needs torch."""
